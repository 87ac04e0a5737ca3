"""Copier task: resolve the rendered service's dependencies into uv.lock.

Skipped when uv is missing, and never allowed to download a Python interpreter.
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
    subprocess.run([uv, "lock", "--quiet"], check=True, env=env)


if __name__ == "__main__":
    main()
