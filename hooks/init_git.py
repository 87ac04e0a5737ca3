"""Copier task: make a freshly copied service a git repository.

Copier's `update` needs the service under git; this only runs `git init` when git exists
and no repository does. initial_commit.py makes the first commit once the lock file exists.
"""

import shutil
import subprocess
from pathlib import Path


def main() -> None:
    if shutil.which("git") is None:
        print("git not found: skipping `git init` (copier update needs the project under git)")
        return
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True, check=False
    )
    if inside.returncode == 0:
        return
    subprocess.run(["git", "init", "--quiet", str(Path.cwd())], check=True)


if __name__ == "__main__":
    main()
