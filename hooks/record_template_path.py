"""Copier task: record a template given by a relative path as an absolute one.

`copier copy ../template service` records `_src_path: ../template` in the answers file, and a
later `copier update`, run from the service, looks for `../template` next to the service: it
finds no template there and stops with only "Updating is only supported in git-tracked
templates". This rewrites such a path as the absolute path of the template that was copied. A
URL, an absolute path and a `~` path are left as they are.

Copier gives the task the template's local copy: for a git template, a clone whose `origin` is
the template's path made absolute by git; for any other, the template's directory itself.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

KEY = "_src_path"


def is_relative_local_path(source: str) -> bool:
    if "://" in source or source.startswith(("/", "~", "git@", "gh:", "gl:")):
        return False
    return not Path(source).is_absolute()


def template_directory(local_copy: Path) -> Path:
    """The template's own directory, of which Copier may have rendered a clone."""
    if shutil.which("git") is None:  # then Copier cloned nothing
        return local_copy.resolve()
    origin = subprocess.run(
        ["git", "-C", str(local_copy), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    )
    source = origin.stdout.strip()
    if origin.returncode == 0 and Path(source).is_absolute():
        return Path(source).resolve()
    return local_copy.resolve()


def main(local_copy: str, answers_file: str) -> None:
    answers_path = Path(answers_file)
    lines = answers_path.read_text(encoding="utf-8").splitlines(keepends=True)
    for index, line in enumerate(lines):
        if not line.startswith(f"{KEY}:"):
            continue
        source = yaml.safe_load(line)[KEY]
        if not is_relative_local_path(source):
            return
        absolute = template_directory(Path(local_copy))
        lines[index] = yaml.safe_dump({KEY: str(absolute)}, width=10_000)
        answers_path.write_text("".join(lines), encoding="utf-8")
        print(
            f"Recorded the template as {absolute} in {answers_file} (it was given as {source}),"
            " so that `copier update` finds it from the service."
        )
        return


if __name__ == "__main__":
    main(*sys.argv[1:])
