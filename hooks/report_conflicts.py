"""Copier migration: name the files a `copier update` left with conflicts, and what to do.

Where the template and the team changed the same lines, `copier update` writes both versions
between conflict markers (or, with `--conflict rej`, leaves a `.rej` file) and still exits 0
without a word. This lists them, with the markers' line numbers. It exits 0 too: the update is
complete, and the conflicts are the team's to resolve. The markers and the directories skipped
are those of the service's tests/runtime/test_no_merge_leftovers.py, which fails until then.
"""

import os
from collections.abc import Iterator
from pathlib import Path

SKIPPED_DIRECTORIES = {
    ".git",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "build",
    "dist",
}
LARGEST_TEXT_FILE = 5_000_000
# Built from pieces, so that this file does not hold the markers it looks for.
MARKERS = tuple(character * 7 + " " for character in "<|>")
SEPARATOR = "=" * 7
WHAT_TO_DO = """\
Resolve each one: keep the lines you want and delete the markers, or apply a .rej file's
changes by hand and delete it. Then `git add` the files, run the tests (`uv run pytest`) and
commit."""


def service_files(root: Path) -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            name
            for name in subdirectories
            if name not in SKIPPED_DIRECTORIES and not name.endswith(".egg-info")
        )
        for name in sorted(files):
            yield Path(directory, name)


def conflict_lines(path: Path) -> list[int]:
    """Line numbers of the conflict markers in a text file; none for a binary or huge one."""
    try:
        if path.stat().st_size > LARGEST_TEXT_FILE:
            return []
        content = path.read_bytes()
    except OSError:
        return []
    if b"\0" in content[:8192]:
        return []
    lines = content.decode("utf-8", errors="replace").splitlines()
    return [
        number
        for number, line in enumerate(lines, 1)
        if line.startswith(MARKERS) or line.rstrip() == SEPARATOR
    ]


def leftovers(root: Path) -> list[str]:
    """One line per conflicted file: its path and what is left in it."""
    found = []
    for path in service_files(root):
        name = path.relative_to(root).as_posix()
        if path.suffix == ".rej":
            found.append(f"{name}: changes that could not be applied")
        elif lines := conflict_lines(path):
            found.append(f"{name}: conflict markers on lines {', '.join(map(str, lines))}")
    return found


def main() -> None:
    found = leftovers(Path.cwd())
    if found:
        listing = "\n".join(f"  {line}" for line in found)
        print(f"`copier update` left conflicts in {len(found)} file(s):\n{listing}\n{WHAT_TO_DO}")


if __name__ == "__main__":
    main()
