"""Copier migration: print what changed in the template since the version a service came from.

`copier update` says which version it updates to, not what that version changes. The
template's CHANGELOG.md is not part of the service, so this reads it from the template's clone
that Copier updates from, at the new version and at the old one (`VERSION_FROM`, which Copier
sets), and prints the entries of the new one that the old one lacks, under their headings. An
entry is a list item with its continuation lines, or a paragraph. Nothing is printed when the
version did not change; when the old changelog cannot be read, the new one is pointed at.
"""

import os
import subprocess
import sys
from pathlib import Path

CHANGELOG = "CHANGELOG.md"


def changelog_at(template: Path, version: str) -> str | None:
    """CHANGELOG.md at a version Copier recorded (a commit or `git describe` output)."""
    shown = subprocess.run(
        ["git", "-C", str(template), "show", f"{version}:{CHANGELOG}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.stdout if shown.returncode == 0 else None


def entries(changelog: str) -> list[tuple[tuple[str, ...], str]]:
    """Each entry below the first `##` heading, with the headings it sits under."""
    found: list[tuple[tuple[str, ...], str]] = []
    headings: tuple[str, ...] = ()
    entry: list[str] = []

    def close_entry() -> None:
        if entry:
            found.append((headings, "\n".join(entry)))
            entry.clear()

    for line in changelog.splitlines():
        if line.startswith("#"):
            close_entry()
            level = len(line) - len(line.lstrip("#"))
            headings = (*headings[: max(level - 2, 0)], line) if level >= 2 else ()
        elif not line.strip():
            close_entry()
        elif headings:
            if line.startswith("- "):
                close_entry()
            entry.append(line)
    close_entry()
    return found


def normalized(text: str) -> str:
    return " ".join(text.split())


def new_entries(old: str, new: str) -> str:
    """The entries of `new` that `old` lacks, each under the headings not printed yet."""
    known = {normalized(text) for _, text in entries(old)}
    printed: tuple[str, ...] = ()
    lines: list[str] = []
    for headings, text in entries(new):
        if normalized(text) in known:
            continue
        shared = 0
        while shared < min(len(headings), len(printed)) and headings[shared] == printed[shared]:
            shared += 1
        lines.extend(headings[shared:])
        lines.append(text)
        printed = headings
    return "\n".join(lines)


def main(template: str) -> None:
    version_from, version_to = os.environ["VERSION_FROM"], os.environ["VERSION_TO"]
    if version_from == version_to:
        return
    new = (Path(template) / CHANGELOG).read_text(encoding="utf-8")
    old = changelog_at(Path(template), version_from)
    if old is None:
        print(
            f"The template's {CHANGELOG} says what changed since {version_from}; this update "
            "could not read that version's."
        )
        return
    changes = new_entries(old, new)
    if changes:
        print(f"What changed in the template since {version_from} (its {CHANGELOG}):\n{changes}\n")


if __name__ == "__main__":
    main(sys.argv[1])
