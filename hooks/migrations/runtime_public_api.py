"""Copier migration: point the team's imports at the runtime's public API.

Run by `copier update` after every update, in the service's root (see `_migrations` in
copier.yml):

    runtime_public_api.py PACKAGE_NAME

Services rendered before template 0.3 imported from the runtime's modules
(`from .runtime.service import AgentSpec`), which 0.3 moved into `runtime/_internal/`.
In the team's Python files (everything under `src/<PACKAGE_NAME>/` and `tests/` except
the template's own `runtime/` directories), an import from an old module becomes an
import from `runtime` for what the public API offers, and from the module's new place
for the rest. Nothing else in those files changes.

It detects the old layout itself, so it is right from a tagged release or a branch, and
idempotent: once the imports are rewritten there is nothing left to find.
"""

import re
import sys
from pathlib import Path

PUBLIC = frozenset(
    {
        "AgentSpec",
        "ConfigurationError",
        "ENV_PREFIX",
        "RuntimeSettings",
        "ThreadedServer",
        "ToolError",
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
    "autogen_bridge": "_internal.agent.autogen_bridge",
    "body_limit": "_internal.http.middleware",
    "cli": "_internal.ops.cli",
    "errors": "_internal.errors",
    "fake_upstream": "_internal.agent.fake_upstream",
    "history": "_internal.agent.history",
    "logging": "_internal.ops.logging",
    "metrics": "_internal.features.observability.metrics",
    "request_context": "_internal.http.middleware",
    "routes": "_internal.http.routes",
    "schemas": "_internal.http.schemas",
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
}
_OLD = "|".join(sorted(MOVED_MODULES))


def _import_pattern(package_name: str) -> re.Pattern[str]:
    """`from <.runtime | pkg.runtime>[.<old module>] import names` (parenthesised or not)."""
    anchor = rf"(?P<base>\.+|{re.escape(package_name)}\.)runtime"
    names = r"(?:\((?P<wrapped>[^)]*)\)|(?P<plain>[^\n#]*?))"
    return re.compile(
        rf"^(?P<indent>[ \t]*)from {anchor}(?:\.(?P<module>{_OLD}))? import {names}"
        rf"(?P<comment>[ \t]*#[^\n]*)?$",
        re.M,
    )


def _parse_names(text: str) -> list[tuple[str, str | None]]:
    """`a, b as c` → [("a", None), ("b", "c")]."""
    found = []
    for part in text.replace("\n", " ").split(","):
        words = part.split()
        if words:
            found.append((words[0], words[2] if len(words) == 3 else None))
    return found


def _rewrite(match: re.Match[str]) -> str:
    module = match["module"]
    names = _parse_names(match["wrapped"] if match["wrapped"] is not None else match["plain"])
    # `from .runtime import X` is old only when X is one of the old modules.
    if module is None and not any(name in MOVED_MODULES for name, _ in names):
        return match[0]
    targets: dict[str, list[str]] = {}
    for name, alias in names:
        if module is None and name in MOVED_MODULES:
            parent, _, leaf = MOVED_MODULES[name].rpartition(".")
            where, imported = parent, leaf + (f" as {alias}" if alias else f" as {name}")
            if leaf == name and not alias:
                imported = name
        else:
            if name in PUBLIC:
                where = ""
            elif name in MOVED_NAMES:
                where = MOVED_NAMES[name]
            else:
                where = MOVED_MODULES[module] if module else ""
            imported = name + (f" as {alias}" if alias else "")
        targets.setdefault(where, []).append(imported)
    lines = []
    for where, imported in sorted(targets.items()):
        path = f"runtime.{where}" if where else "runtime"
        lines.append(f"{match['indent']}from {match['base']}{path} import {', '.join(imported)}")
    if match["comment"]:
        lines[0] += match["comment"]
    return "\n".join(lines)


def migrate_file(path: Path, package_name: str) -> bool:
    text = path.read_text(encoding="utf-8")
    new = _import_pattern(package_name).sub(_rewrite, text)
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def team_files(root: Path, package_name: str) -> list[Path]:
    """The Python files the team writes: not the template's `runtime/` directories."""
    found = []
    for top in (root / "src" / package_name, root / "tests"):
        for path in sorted(top.rglob("*.py")) if top.is_dir() else []:
            if "runtime" not in path.relative_to(top).parts[:-1]:
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
