"""Copier task and migration: write the table of every setting into docs/configuration.md.

The table is generated from the service's settings model (its own settings included), by
`<project_slug> doctor --write-settings-reference`, so that the page reads complete on GitHub
too; `tests/runtime/test_docs.py` fails when it is out of date. On `copier update` it runs as
a migration, after the merge, so that the table shows the updated runtime's settings. Skipped
when uv is missing; a failure is reported and does not undo the render.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path


def main(project_slug: str, env_prefix: str) -> None:
    command = f"uv run {project_slug} doctor --write-settings-reference"
    uv = shutil.which("uv")
    if uv is None or not Path("uv.lock").is_file():
        print(f"uv or uv.lock missing: write the settings table later with `{command}`")
        return
    # The service's settings are not loaded, only listed: the environment's values are no
    # concern, and none is passed on.
    env = {name: value for name, value in os.environ.items() if not name.startswith(env_prefix)}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.pop("VIRTUAL_ENV", None)
    written = subprocess.run(
        [uv, "run", "--frozen", project_slug, "doctor", "--write-settings-reference"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if written.returncode != 0:
        print(f"writing the settings table failed; run `{command}` later:\n{written.stderr}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
