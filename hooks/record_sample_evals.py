"""Copier task and migration: record the sample evaluation's model calls, against the
offline model.

So that a service's `<project_slug> eval evals/support.jsonl` (and its CI job) replays them
with no key and no model server. Only where they were never recorded (a new service, or one
updated from before evaluations existed), or where they were recorded against the offline
model by another engine (an update that switched `engine`): each engine words its model
calls its own way, so those recordings would match no call. Recordings made against another
model are the team's: they are left alone, with a word that they must be recorded again.
Skipped when uv is missing; a failure is reported and does not undo the render.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DATASET = Path("evals/support.jsonl")
RECORDINGS = Path("evals/cassettes/support")
RECORDING = RECORDINGS / "recording.json"


def main(project_slug: str, env_prefix: str, engine: str) -> None:
    if not DATASET.is_file():
        return
    if RECORDINGS.exists():
        if not _recorded_offline_on_another_engine(engine, project_slug):
            return
        shutil.rmtree(RECORDINGS)
        print(f"the sample evaluation was recorded on another engine: recording it on {engine}")
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


def _recorded_offline_on_another_engine(engine: str, project_slug: str) -> bool:
    """Whether the recordings are of the offline model by another engine, so that recording
    them again gives what they held; says so when another model's need recording again."""
    try:
        recording = json.loads(RECORDING.read_text(encoding="utf-8"))
        # Recordings from before template 0.4 name no engine: AutoGen made them.
        recorded_on = recording.get("engine", "autogen")
        offline = recording.get("model_provider") == "offline"
    except (OSError, ValueError, AttributeError):
        return False  # not recordings this command made: the team's to look after
    if recorded_on == engine:
        return False
    if not offline:
        print(
            f"{RECORDINGS} was recorded on the {recorded_on} engine and this service now runs "
            f"on {engine}, whose model calls differ: record it again against your model with "
            f"`uv run {project_slug} eval {DATASET} --record`"
        )
    return offline


if __name__ == "__main__":
    main(*sys.argv[1:4])
