"""Copier task and migration: record the sample evaluation's model calls, against the
offline model.

So that a service's `<project_slug> eval evals/support.jsonl` (and its CI job) replays them
with no key and no model server. Only where they were never recorded (a new service, or one
updated from before evaluations existed): recordings that exist are the team's, perhaps made
against its own model. Skipped when uv is missing; a failure is reported and does not undo
the render.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DATASET = Path("evals/support.jsonl")
RECORDINGS = Path("evals/cassettes/support")


def main(project_slug: str, env_prefix: str) -> None:
    if RECORDINGS.exists() or not DATASET.is_file():
        return
    uv = shutil.which("uv")
    if uv is None or not Path("uv.lock").is_file():
        print(
            "uv or uv.lock missing: record the sample evaluation later with "
            f"`uv run {project_slug} eval {DATASET} --record`"
        )
        return
    env = {name: value for name, value in os.environ.items() if not name.startswith(env_prefix)}
    env |= {"UV_PYTHON_DOWNLOADS": "never", f"{env_prefix}MODEL_PROVIDER": "offline"}
    env.pop("VIRTUAL_ENV", None)
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [uv, "run", "--frozen", project_slug, "eval", str(DATASET), "--record"]
        command += ["--report", str(report)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        print(f"recorded the sample evaluation against the offline model in {RECORDINGS}/")
        return
    # Nothing half-recorded stays: an existing directory would stop the next attempt.
    shutil.rmtree(RECORDINGS, ignore_errors=True)
    print(
        f"recording the sample evaluation failed; run `uv run {project_slug} eval "
        f"{DATASET} --record` later:\n{result.stdout}{result.stderr}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
