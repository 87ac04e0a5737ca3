"""Copier migration: rename one of the runtime's settings in a service that was rendered earlier.

Run by `copier update` in the service's root (see `_migrations` in copier.yml):

    rename_setting.py ENV_PREFIX PACKAGE_NAME OLD_FIELD NEW_FIELD

- In `.env` and `.env.*` files of the service's root, the variable `<ENV_PREFIX><OLD_FIELD>`
  (any letter case, with or without `export`) becomes `<ENV_PREFIX><NEW_FIELD>`, value kept.
- In `src/<PACKAGE_NAME>/settings.py`, the team's file, the field `old_field` (a redeclared
  default, a validator's `self.old_field`) becomes `new_field`, and the variable's old name
  becomes the new one in comments and strings.

Idempotent: a second run finds nothing to change. Every change is printed, so the team can
review it with the rest of the update in `git diff`.
"""

import re
import sys
from pathlib import Path


def rename_in_env_file(path: Path, old: str, new: str) -> list[str]:
    """Rename the variable `old` to `new` in one dotenv file; the changes made, described."""
    text = path.read_text(encoding="utf-8")
    assignment = re.compile(
        rf"^(?P<lead>[ \t]*(?:export[ \t]+)?){re.escape(old)}(?=[ \t]*=)", re.I | re.M
    )
    if not assignment.search(text):
        return []
    already_set = re.compile(rf"^[ \t]*(?:export[ \t]+)?{re.escape(new)}[ \t]*=", re.I | re.M)
    if already_set.search(text):
        return [
            f"{path.name}: both {old} and {new} are set; {new} wins, so {old} is ignored: "
            f"remove it (left unchanged)"
        ]
    path.write_text(assignment.sub(lambda match: match["lead"] + new, text), encoding="utf-8")
    return [f"{path.name}: renamed {old} to {new}"]


def rename_in_settings(path: Path, renames: dict[str, str]) -> list[str]:
    """Rename whole identifiers in the team's settings module; the changes made, described."""
    text = path.read_text(encoding="utf-8")
    changes = []
    for old, new in renames.items():
        pattern = re.compile(rf"\b{re.escape(old)}\b")
        count = len(pattern.findall(text))
        if count:
            text = pattern.sub(new, text)
            changes.append(f"{path.as_posix()}: renamed {old} to {new} ({count}x)")
    if changes:
        path.write_text(text, encoding="utf-8")
    return changes


def main(env_prefix: str, package_name: str, old_field: str, new_field: str) -> None:
    root = Path.cwd()
    old_variable, new_variable = (env_prefix + old_field).upper(), (env_prefix + new_field).upper()
    changes = []
    for env_file in sorted([*root.glob(".env"), *root.glob(".env.*")]):
        if env_file.is_file():
            changes += rename_in_env_file(env_file, old_variable, new_variable)
    settings = Path("src", package_name, "settings.py")
    if settings.is_file():
        changes += rename_in_settings(settings, {old_field: new_field, old_variable: new_variable})
    if changes:
        print(
            f"migration: setting {old_field} is now {new_field} ({old_variable} -> {new_variable})"
        )
    for change in changes:
        print(f"migration:   {change}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(f"usage: {Path(sys.argv[0]).name} ENV_PREFIX PACKAGE_NAME OLD_FIELD NEW_FIELD")
    main(*sys.argv[1:])
