"""No leftovers of a `copier update`: conflict markers or `.rej` files.

Where an update finds that the template and you changed the same lines of a file, it writes
both versions into the file between conflict markers (or, with `--conflict rej`, leaves a
`.rej` file next to it). These tests fail until every conflict is resolved.
"""

import os
from collections.abc import Iterator
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
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


def project_files() -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(PROJECT):
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
    found = [number for number, line in enumerate(lines, 1) if line.startswith(MARKERS)]
    found += [number for number, line in enumerate(lines, 1) if line.rstrip() == SEPARATOR]
    return sorted(found)


def test_no_rejected_hunks_are_left() -> None:
    rejected = [str(path.relative_to(PROJECT)) for path in project_files() if path.suffix == ".rej"]
    assert rejected == [], (
        "`copier update` could not apply these changes; apply each by hand, then delete "
        f"the .rej file: {rejected}"
    )


def test_no_conflict_markers_are_left() -> None:
    conflicts = {
        str(path.relative_to(PROJECT)): lines
        for path in project_files()
        if (lines := conflict_lines(path))
    }
    assert conflicts == {}, (
        "unresolved `copier update` conflicts (file: line numbers); keep the right lines, "
        f"delete the markers: {conflicts}"
    )
