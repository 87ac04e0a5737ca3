"""Copier migration: point the team's imports at the runtime's public API.

Run by `copier update` after every update, in the service's root (see `_migrations` in
copier.yml):

    runtime_public_api.py PACKAGE_NAME

Services rendered before template 0.3 imported from the runtime's modules
(`from .runtime.service import AgentSpec`), which 0.3 moved into `runtime/_internal/`.
In the team's Python files (everything under `src/<PACKAGE_NAME>/` and `tests/` except
the template's own `runtime/` directories), an import from an old module becomes an
import from `runtime` for what the public API offers, and from the module's new place
for the rest. Adjacent runtime imports are rewritten together, merged and sorted as ruff's
isort wants them (so `ruff check` passes after the update), each comment kept with the
name or statement it was written next to. Nothing else in those files changes.

It detects the old layout itself, so it is right from a tagged release or a branch, and
idempotent: once the imports are rewritten there is nothing left to find.
"""

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

PUBLIC = frozenset(
    {
        "AgentSpec",
        "ConfigurationError",
        "ENV_PREFIX",
        "RuntimeSettings",
        "TeamKind",
        "TeamSpec",
        "ThreadedServer",
        "ToolError",
        "USER",
        "call_tool",
        "chat_body",
        "create_app",
        "serve",
        "tool",
    }
)
# Where each module of the old flat runtime went, under runtime/.
MOVED_MODULES = {
    "app": "_internal.http.app",
    "auth": "_internal.features.auth",
    # Split by 0.4: the turn's events and results stay engine-neutral, the rest is AutoGen's.
    "autogen_bridge": "_internal.agent.turn",
    "body_limit": "_internal.http.middleware",
    "cli": "_internal.ops.cli",
    "errors": "_internal.errors",
    "fake_upstream": "_internal.agent.fake_upstream",
    "history": "_internal.agent.history",
    "logging": "_internal.ops.logging",
    "metrics": "_internal.features.observability.metrics",
    "request_context": "_internal.http.middleware",
    "routes": "_internal.http.routes",
    "schemas": "_internal.contract",
    "service": "_internal.agent.service",
    "sessions": "_internal.features.sessions",
    "settings": "_internal.settings",
    "streaming": "_internal.features.streaming",
    "telemetry": "_internal.features.observability.telemetry",
    "testing": "_internal.ops.testing",
    "tokens": "_internal.agent.tokens",
    "tools": "_internal.agent.tools",
}
# Names that left their module's new place for another.
MOVED_NAMES = {
    "current_request_id": "_internal.context",
    "chat_service": "_internal.dependencies",
    "settings_reference": "_internal.settings",
    "build_model_client": "_internal.agent.engines.autogen.client",
    "message_text": "_internal.agent.engines.autogen.context",
    "TurnTrimmingContext": "_internal.agent.engines.autogen.context",
}
_OLD = "|".join(sorted(MOVED_MODULES))
# ruff's line length in the rendered pyproject.toml: a longer import is wrapped, as ruff wraps it.
LINE_LENGTH = 100


@dataclass
class Member:
    """One imported name, the module under `runtime` it now comes from ("" for the public API),
    and the comments written next to it, which move with it."""

    target: str
    name: str
    alias: str | None
    comments_above: list[str] = field(default_factory=list)
    comment_after: str | None = None
    # The comments of the statement this member was first in, which ruff keeps on the statement.
    statement_comments: list[str] = field(default_factory=list)

    def source(self) -> str:
        return f"{self.name} as {self.alias}" if self.alias else self.name

    def sort_key(self) -> tuple[object, ...]:
        """ruff's (isort's) order: constants, then classes, then the rest; natural order within."""
        if len(self.name) > 1 and self.name.isupper():
            kind = 0
        elif self.name[:1].isupper():
            kind = 1
        else:
            kind = 2
        return (kind, _natural(self.name.lower()), _natural(self.name), self.alias or "")


def _natural(text: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _import_pattern(package_name: str) -> re.Pattern[str]:
    """`from <.runtime | pkg.runtime>[.<old module>] import names` (parenthesised or not)."""
    anchor = rf"(?P<base>\.+|{re.escape(package_name)}\.)runtime"
    # A comment inside the parentheses runs to the end of its line, whatever it holds (")").
    names = r"(?:\((?P<wrapped>(?:[^)#]|#[^\n]*(?![^\n]))*)\)|(?P<plain>[^\n#()]*?))"
    return re.compile(
        rf"^(?P<indent>[ \t]*)from {anchor}(?:\.(?P<module>{_OLD}))? import {names}"
        rf"(?:[ \t]*(?P<comment>#[^\n]*))?$",
        re.M,
    )


def _is_old(statement: re.Match[str]) -> bool:
    """An import from an old module, or of an old module (`from .runtime import service`)."""
    members = _members(statement)
    if not members:  # not Python; left for the team to see
        return False
    return statement["module"] is not None or any(m.name in MOVED_MODULES for m in members)


def _members(statement: re.Match[str]) -> list[Member]:
    """The names one statement imports, each with where it comes from now and its comments.

    As ruff reads them: a comment after the statement or its opening parenthesis belongs to the
    statement, one after a name to the name, one on a line of its own to the name below it.
    """
    module = statement["module"]
    found: list[Member] = []
    statement_comments: list[str] = []
    waiting: list[str] = []
    names = statement["plain"] if statement["wrapped"] is None else statement["wrapped"]
    for number, line in enumerate(names.split("\n")):
        code, hash_sign, rest = line.partition("#")
        imported_on_line = [part.split() for part in code.split(",") if part.strip()]
        for words in imported_on_line:
            found.append(_moved(module, words[0], words[2] if len(words) == 3 else None))
            found[-1].comments_above, waiting = waiting, []
        comment = hash_sign + rest.rstrip()
        if not hash_sign:
            continue
        if imported_on_line:
            found[-1].comment_after = comment
        elif number == 0:
            statement_comments.append(comment)
        else:
            waiting.append(comment)
    if statement["comment"]:
        statement_comments.append(statement["comment"].rstrip())
    if found:
        found[0].statement_comments = statement_comments
        found[-1].comments_above += waiting  # a comment below the last name
    return found


def _moved(module: str | None, name: str, alias: str | None) -> Member:
    if module is None and name in MOVED_MODULES:  # a module, imported from its new package
        parent, _, leaf = MOVED_MODULES[name].rpartition(".")
        return Member(parent, leaf, alias or (name if leaf != name else None))
    if name in PUBLIC:
        return Member("", name, alias)
    if name in MOVED_NAMES:
        return Member(MOVED_NAMES[name], name, alias)
    return Member(MOVED_MODULES[module] if module else "", name, alias)


def _statements(indent: str, base: str, members: list[Member]) -> str:
    """The imports of `members`, as ruff's isort writes them: one statement per module, sorted;
    aliased names on statements of their own (ruff's default `combine-as-imports = false`)."""
    unique: dict[tuple[str, str, str | None], Member] = {}
    for member in members:
        kept = unique.setdefault((member.target, member.name, member.alias), member)
        if kept is not member:
            kept.comments_above += member.comments_above
            kept.comment_after = kept.comment_after or member.comment_after
            kept.statement_comments += member.statement_comments
    by_target: dict[str, list[Member]] = {}
    for member in unique.values():
        by_target.setdefault(member.target, []).append(member)
    lines = []
    for target in sorted(by_target):
        module = f"{base}runtime.{target}" if target else f"{base}runtime"
        plain = sorted((m for m in by_target[target] if m.alias is None), key=Member.sort_key)
        groups = [[member] for member in by_target[target] if member.alias is not None]
        groups += [plain] if plain else []
        for group in sorted(groups, key=lambda group: group[0].sort_key()):
            lines.append(_statement(indent, module, group))
    return "\n".join(lines)


def _statement(indent: str, module: str, members: list[Member]) -> str:
    """One `from module import ...`: on one line if it fits and no name has a comment of its
    own, else one name a line, in parentheses."""
    head = f"{indent}from {module} import "
    on_statement = "".join(f"  {c}" for member in members for c in member.statement_comments)
    one_line = head + ", ".join(member.source() for member in members) + on_statement
    if len(one_line) <= LINE_LENGTH and not any(
        member.comments_above or member.comment_after for member in members
    ):
        return one_line
    lines = [f"{head}({on_statement}"]
    for member in members:
        lines += [f"{indent}    {comment}" for comment in member.comments_above]
        after = f"  {member.comment_after}" if member.comment_after else ""
        lines.append(f"{indent}    {member.source()},{after}")
    return "\n".join([*lines, f"{indent})"])


def migrate_text(text: str, package_name: str) -> str:
    """`text` with each run of adjacent runtime imports that holds an old one rewritten whole,
    so that the block stays sorted and merged as ruff wants it."""
    statements = list(_import_pattern(package_name).finditer(text))
    runs: list[list[re.Match[str]]] = []
    for statement in statements:
        previous = runs[-1][-1] if runs else None
        if (
            previous is not None
            and statement.start() == previous.end() + 1
            and (statement["indent"], statement["base"]) == (previous["indent"], previous["base"])
        ):
            runs[-1].append(statement)
        else:
            runs.append([statement])
    pieces, done = [], 0
    for run in runs:
        if not any(_is_old(statement) for statement in run):
            continue
        members = [member for statement in run for member in _members(statement)]
        first = run[0]
        pieces += [text[done : first.start()], _statements(first["indent"], first["base"], members)]
        done = run[-1].end()
    return "".join([*pieces, text[done:]])


def migrate_file(path: Path, package_name: str) -> bool:
    text = path.read_text(encoding="utf-8")
    new = migrate_text(text, package_name)
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def team_files(root: Path, package_name: str) -> list[Path]:
    """The Python files the team writes: not the template's `runtime/` directories, nor the
    template's few files beside them, which the update itself brought up to date."""
    package = root / "src" / package_name
    templates = {package / "main.py", package / "__init__.py", root / "tests" / "conftest.py"}
    found = []
    for top in (package, root / "tests"):
        for path in sorted(top.rglob("*.py")) if top.is_dir() else []:
            if "runtime" not in path.relative_to(top).parts[:-1] and path not in templates:
                found.append(path)
    return found


def main(package_name: str) -> None:
    root = Path.cwd()
    changed = [p for p in team_files(root, package_name) if migrate_file(p, package_name)]
    for path in changed:
        print(f"migration: imports now from {package_name}.runtime in {path.relative_to(root)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {Path(sys.argv[0]).name} PACKAGE_NAME")
    main(sys.argv[1])
