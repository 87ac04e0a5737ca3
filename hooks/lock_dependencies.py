"""Copier task: resolve the rendered service's dependencies into uv.lock.

Skipped when uv is missing, and never allowed to download a Python interpreter.
A failed lock (no matching Python on this machine, no network) is reported but
does not undo the render: `uv lock` can be run again later.
"""

import os
import shutil
import subprocess


def main() -> None:
    uv = shutil.which("uv")
    if uv is None:
        print("uv not found: skipping `uv lock`; run it yourself once uv is installed")
        return
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    result = subprocess.run([uv, "lock", "--quiet"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"`uv lock` failed; the project is rendered, run `uv lock` later:\n{result.stderr}")


if __name__ == "__main__":
    main()
