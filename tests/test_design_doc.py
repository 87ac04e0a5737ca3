"""docs/design.md names the files, public names and runtime modules that exist, and no others.

Three tables of docs/design.md are checked: who owns which file (against `_skip_if_exists` in
copier.yml), the public API (against `__all__` of the runtime package) and the runtime modules
(against the files under template/src/{{package_name}}/runtime/, with the condition in each
conditional file name). Nothing is rendered: the tests read the template's own files.
"""

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
RUNTIME = ROOT / "template" / "src" / "{{package_name}}" / "runtime"
# A path part that Copier renders only under a condition: `{% if COND %}NAME{% endif %}REST`.
CONDITIONAL = re.compile(r"\{%\s*if\s+(?P<condition>.+?)\s*%\}(?P<name>.*?)\{%\s*endif\s*%\}")
# The first cell of a row, when it is one backticked value.
BACKTICKED = re.compile(r"`([^`]+)`")
ALWAYS = "always"


def section_rows(heading: str) -> list[list[str]]:
    """The body rows of the Markdown table in the `## heading` section, as lists of cells."""
    text = DESIGN.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/design.md has no section '## {heading}'"
    lines = [line.strip() for line in match[1].splitlines() if line.strip().startswith("|")]
    assert len(lines) > 2, f"the section '## {heading}' of docs/design.md has no table"
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def first_cells(rows: list[list[str]], heading: str) -> list[str]:
    """Each row's first cell, which must be a single backticked value."""
    values = []
    for row in rows:
        match = BACKTICKED.fullmatch(row[0])
        assert match, f"'## {heading}': the first cell of {row} is not one `backticked` value"
        values.append(match[1])
    assert len(values) == len(set(values)), f"'## {heading}' lists a row twice: {values}"
    return values


def normalized(condition: str) -> str:
    return " ".join(condition.replace('"', "'").split())


def runtime_modules() -> dict[str, str]:
    """Each Python module under the template's runtime/, as its path in a rendered service,
    with the condition it is rendered under (`always` for none).

    Conditional names lose their Jinja and `.jinja` its suffix; empty `__init__.py` files,
    which only make a directory a package, are left out, as the table leaves them out.
    """
    modules = {}
    for path in sorted(RUNTIME.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        parts, conditions = [], []
        for part in path.relative_to(RUNTIME).parts:
            if match := CONDITIONAL.search(part):
                conditions.append(normalized(match["condition"]))
                part = part[: match.start()] + match["name"] + part[match.end() :]
            parts.append(part.removesuffix(".jinja"))
        name = "/".join(parts)
        if not name.endswith(".py"):
            continue
        if parts[-1] == "__init__.py" and not path.read_text(encoding="utf-8").strip():
            continue
        modules[name] = " and ".join(conditions) or ALWAYS
    return modules


def test_the_module_table_lists_every_runtime_module_and_no_other() -> None:
    heading = "Runtime modules"
    rows = section_rows(heading)
    listed = first_cells(rows, heading)
    for path in listed:
        assert "{" not in path and "%" not in path, f"write {path!r} without Jinja"
    modules = runtime_modules()
    assert modules, f"no runtime modules found under {RUNTIME}"
    missing = sorted(set(modules) - set(listed))
    gone = sorted(set(listed) - set(modules))
    assert not missing and not gone, (
        f"docs/design.md '## {heading}' is out of step with {RUNTIME.relative_to(ROOT)}: "
        f"add rows for {missing}, remove the rows of {gone}"
    )


def test_the_module_table_says_when_each_module_is_rendered() -> None:
    heading = "Runtime modules"
    rows = section_rows(heading)
    documented = {}
    for path, row in zip(first_cells(rows, heading), rows, strict=True):
        condition = BACKTICKED.fullmatch(row[1])
        documented[path] = normalized(condition[1]) if condition else row[1]
    modules = runtime_modules()
    wrong = {
        path: f"the table says {said!r}, the file name says {modules[path]!r}"
        for path, said in documented.items()
        if path in modules and said != modules[path]
    }
    assert not wrong, f"docs/design.md '## {heading}': {wrong}"


def test_the_public_api_table_lists_the_runtime_packages_exports() -> None:
    heading = "The public API"
    tree = ast.parse((RUNTIME / "__init__.py").read_text(encoding="utf-8"))
    exported = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets)
    )
    listed = set(first_cells(section_rows(heading), heading))
    assert listed == set(exported), (
        f"docs/design.md '## {heading}': add {sorted(set(exported) - listed)}, "
        f"remove {sorted(listed - set(exported))}"
    )


def test_the_team_files_are_the_ones_copier_never_overwrites() -> None:
    heading = "Who owns which file"
    rows = section_rows(heading)
    owners = dict(zip(first_cells(rows, heading), (row[1] for row in rows), strict=True))
    assert set(owners.values()) == {"team", "template"}, owners
    copier_yml = yaml.safe_load((ROOT / "copier.yml").read_text(encoding="utf-8"))
    skipped = {
        pattern.replace("src/*/", "src/<package>/") for pattern in copier_yml["_skip_if_exists"]
    }
    team = {path for path, owner in owners.items() if owner == "team"}
    assert team == skipped, (
        f"docs/design.md '## {heading}': the team's files are {sorted(team)}, "
        f"_skip_if_exists in copier.yml has {sorted(skipped)}"
    )
