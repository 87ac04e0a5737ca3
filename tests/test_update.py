"""`copier update` carries a service rendered before the runtime's 0.3 layout over to it.

The template repository of these tests is a clone of this one, whose history holds PRE_CHANGE,
the last commit with the flat `runtime/` modules that the team's files imported from, with this
working tree committed on top (uncommitted changes included). A service is rendered from
PRE_CHANGE, changed by its team (a new tool, a changed prompt, a new setting, new tests),
committed and updated to the working tree's commit, once for the whole module; each test checks
one thing about the result. That repository has no tags, as when a service follows a branch:
Copier's versions are then `0.0.0.postN.dev0+<sha>` and would never cross a migration's
`version`, so this shows that the migrations find the old state themselves. A cheaper update
between two tagged releases shows the same from releases.

A second service, rendered from LAYOUT_0_3 with edits of two runtime modules that 0.4 split or
moved, is updated the same way: the edits are kept as patches, the renamed engine log setting
is migrated, and the service passes ruff and the tests of the code that moved.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml
from rendering import TEMPLATE, Rendered, render, require_python

# The commit before "Runtime 0.3 layout": what services rendered before it were made from.
PRE_CHANGE = "51cce12"
# A commit of the 0.3 layout, before the engine seam split the AutoGen bridge (0.4).
LAYOUT_0_3 = "f2ec4ee"
# No global git identity is needed: every commit of these tests names its own.
GIT = [
    "git",
    "-c",
    "user.name=Template Tests",
    "-c",
    "user.email=template-tests@example.com",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "tag.gpgsign=false",
]
MIGRATIONS = TEMPLATE / "hooks" / "migrations"
LEFTOVER_CHECK = TEMPLATE / "template" / "tests" / "runtime" / "test_no_merge_leftovers.py"
CONFLICT_OPENING, CONFLICT_CLOSING = "<" * 7 + " before updating", ">" * 7 + " after updating"
MERGE_MARKERS = ("<" * 7 + " ", "|" * 7 + " ", ">" * 7 + " ")

# The team's files: `_skip_if_exists` in copier.yml, and a test module of its own. `{pkg}` is
# the package's directory.
TEAM_FILES = [
    "src/{pkg}/agent.py",
    "src/{pkg}/settings.py",
    "src/{pkg}/tools.py",
    "tests/test_tools.py",
    "tests/test_agent.py",
]
# What the update may change in them: the imports from the old runtime modules, and only those.
REWRITTEN_IMPORTS = {
    "src/{pkg}/agent.py": (
        "from .runtime.service import AgentSpec\n",
        "from .runtime import AgentSpec\n",
    ),
    "src/{pkg}/settings.py": (
        "from .runtime.settings import RuntimeSettings\n",
        "from .runtime import RuntimeSettings\n",
    ),
    "src/{pkg}/tools.py": (
        "from .runtime.tools import ToolError, tool\n",
        "from .runtime import ToolError, tool\n",
    ),
    # Two statements become one: ruff's isort wants them merged.
    "tests/test_agent.py": (
        "from {pkg}.runtime.service import AgentSpec\n"
        "from {pkg}.runtime.testing import chat_body, serve\n",
        "from {pkg}.runtime import AgentSpec, chat_body, serve\n",
    ),
}

TEAM_PROMPT = '''SYSTEM_PROMPT = """\\
You answer claims questions for the support desk. Always cite the customer id."""'''
TEAM_TOOL = '''@tool
def ticket_priority(severity: int) -> dict[str, object]:
    """The priority of a support ticket from its severity, 1 (outage) to 4 (question)."""
    if not 1 <= severity <= 4:
        raise ToolError(f"Severity must be 1 to 4, not {severity}.", type="invalid_severity")
    return {"priority": f"P{severity}"}


'''
TEAM_TOOL_TEST = """

async def test_ticket_priority_names_the_priority() -> None:
    assert await call(ticket_priority, severity=2) == {"priority": "P2"}
"""
TEAM_SETTINGS = '''\
"""Settings of this service, as its team left them."""

from pydantic import Field

from .runtime.settings import RuntimeSettings


class Settings(RuntimeSettings):
    escalation_severity: int = Field(
        2, ge=1, le=4, description="Tickets this severe or worse (1 is an outage) page on-call."
    )
'''
# Written against the runtime before 0.3, as the template's own tests were.
TEAM_AGENT_TEST = '''\
"""The agent with the team's prompt and tool, through the API and the offline model."""

import pytest

from {pkg}.agent import AGENT
from {pkg}.runtime.service import AgentSpec
from {pkg}.runtime.testing import chat_body, serve
from {pkg}.settings import Settings

pytestmark = pytest.mark.anyio


async def test_the_agent_calls_the_teams_tool() -> None:
    assert isinstance(AGENT, AgentSpec)
    async with serve(Settings(), AGENT) as client:
        message = '/tool ticket_priority {{"severity": 1}}'
        response = await client.post("/v1/chat", json=chat_body(message))
    reply = response.json()["reply"]
    assert reply == '[offline model] ticket_priority returned: {{"priority":"P1"}}'
'''
# Set before the setting was renamed (template 0.2.0). The service follows a branch, so that
# release's versioned migration never ran; the versionless one of today must rename it.
TEAM_ENV = (
    "{prefix}LOG_LEVEL=DEBUG\nexport {prefix}MODEL_TIMEOUT=12\n{prefix}ESCALATION_SEVERITY=1\n"
)
TEAM_NOTE = "\n\n# Team note: our gateway maps 499 to 504 before it reaches this service.\n"
TEAM_CONFLICTING_EDIT = "# Team: our gateway wraps this app; see infra/gateway.yaml.\n"


def git(repository: Path, *arguments: str) -> str:
    result = subprocess.run(
        [*GIT, *arguments], cwd=repository, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"`git {' '.join(arguments)}` failed in {repository}:\n{result.stderr}")
    return result.stdout


def commit_all(repository: Path, message: str, *, allow_empty: bool = False) -> str:
    git(repository, "add", "--all")
    empty = ["--allow-empty"] if allow_empty else []
    git(repository, "commit", "--quiet", "--no-verify", *empty, "--message", message)
    return git(repository, "rev-parse", "HEAD").strip()


def edit(path: Path, change: Callable[[str], str]) -> None:
    before = path.read_text(encoding="utf-8")
    after = change(before)
    assert after != before, f"the test's edit of {path} no longer applies; update the test"
    path.write_text(after, encoding="utf-8")


def copier_cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "copier", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def check_update(service: Path) -> dict[str, Any]:
    result = copier_cli("check-update", "--output-format", "json", str(service), cwd=service)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def update(service: Path, **options: Any) -> None:
    copier.run_update(
        service, defaults=True, overwrite=True, unsafe=True, skip_answered=True, **options
    )


@contextmanager
def output_of_subprocesses(log: Path) -> Iterator[None]:
    """Send what subprocesses (tasks, migrations) print to `log` instead of pytest's capture."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with log.open("a", encoding="utf-8") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def merge_leftovers(project: Path) -> list[str]:
    """`.rej` files and files with conflict markers, as `copier update` may leave them."""
    found = []
    for path in sorted(project.rglob("*")):
        parts = set(path.relative_to(project).parts)
        if parts & {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}:
            continue
        if not path.is_file():
            continue
        if path.suffix == ".rej":
            found.append(str(path))
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        if any(line.startswith(MERGE_MARKERS) or line.rstrip() == "=" * 7 for line in lines):
            found.append(str(path))
    return found


@dataclass(frozen=True)
class TemplateRepository:
    path: Path
    commit: str  # this working tree, committed on top of the history that holds PRE_CHANGE


def make_template_repository(repository: Path) -> TemplateRepository:
    """A clone of this repository with its working tree committed: tracked files as they are
    now (deleted ones deleted), and untracked ones that git does not ignore."""
    has_pre_change = subprocess.run(
        ["git", "cat-file", "-e", f"{PRE_CHANGE}^{{commit}}"], cwd=TEMPLATE, capture_output=True
    )
    if has_pre_change.returncode != 0:
        pytest.fail(
            f"commit {PRE_CHANGE}, which services are rendered from before the update, is not in "
            f"this clone of the repository (a shallow clone?): run `git fetch --unshallow`"
        )
    git(TEMPLATE, "clone", "--quiet", str(TEMPLATE), str(repository))
    for name in git(repository, "tag", "--list").split():
        git(repository, "tag", "--delete", name)  # a branch: no release to describe it
    for name in git(repository, "ls-files", "-z").split("\0"):
        if name:
            (repository / name).unlink()
    listed = git(TEMPLATE, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in listed.split("\0"):
        if name and (TEMPLATE / name).is_file():
            (repository / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TEMPLATE / name, repository / name)
    # Empty on a clean checkout, as in CI: the commit still names what is tested.
    commit = commit_all(repository, "the working tree", allow_empty=True)
    return TemplateRepository(repository, commit)


@pytest.fixture(scope="module")
def template_repository(tmp_path_factory: pytest.TempPathFactory) -> TemplateRepository:
    return make_template_repository(tmp_path_factory.mktemp("template") / "repository")


def read(service: Rendered, path: str) -> str:
    """A file of the service; `{pkg}` in `path` stands for the package's directory name."""
    return (service.path / path.format(pkg=service.answers["package_name"])).read_text()


def replace_prompt(text: str) -> str:
    return re.sub(r'SYSTEM_PROMPT = """.*?"""', lambda _: TEAM_PROMPT, text, count=1, flags=re.S)


def add_tool(text: str) -> str:
    text = text.replace("\nTOOLS = [", "\n" + TEAM_TOOL + "TOOLS = [")
    return re.sub(r"^(TOOLS = \[.*)\]$", r"\1, ticket_priority]", text, count=1, flags=re.M)


def add_tool_test(text: str) -> str:
    pattern = re.compile(r"^(from \S+\.tools import .*)$", re.M)
    text = pattern.sub(r"\1, ticket_priority", text, count=1)
    return text + TEAM_TOOL_TEST


def make_team_edits(service: Rendered) -> None:
    """What a team does to its service: its own files, a note in a template file, a `.env`."""
    package_name, prefix = service.answers["package_name"], service.answers["env_prefix"]
    package = service.path / "src" / package_name
    edit(package / "agent.py", replace_prompt)
    edit(package / "tools.py", add_tool)
    edit(package / "settings.py", lambda _: TEAM_SETTINGS)
    edit(service.path / "tests" / "test_tools.py", add_tool_test)
    (service.path / "tests" / "test_agent.py").write_text(TEAM_AGENT_TEST.format(pkg=package_name))
    # main.py is the template's: the update changes its imports, away from this note.
    edit(package / "main.py", lambda text: text + TEAM_NOTE)
    # errors.py is the template's too, and the update moves it.
    edit(package / "runtime" / "errors.py", lambda text: text + TEAM_NOTE)
    (service.path / ".env").write_text(TEAM_ENV.format(prefix=prefix))  # ignored by git


def clone(service: Rendered, destination: Path, commit: str) -> Rendered:
    """Another checkout of the service's repository, at `commit`."""
    git(destination.parent, "clone", "--quiet", str(service.path), str(destination))
    git(destination, "reset", "--quiet", "--hard", commit)
    return Rendered(destination.name, destination, service.answers)


@dataclass(frozen=True)
class Update:
    template: TemplateRepository
    service: Rendered  # updated; the update is committed after the facts below are taken
    team_commit: str  # the service as the team left it, rendered from PRE_CHANGE
    update_commit: str
    team_files: dict[str, str]  # TEAM_FILES at `team_commit`
    check_before: dict[str, Any]  # `copier check-update` before the update
    output: str  # what the update's tasks and migrations printed
    status: list[str]  # `git status --porcelain` right after the update
    unmerged: str  # `git ls-files --unmerged` right after the update
    leftovers: list[str]  # merge_leftovers() right after the update


@pytest.fixture(scope="module")
def updated(
    template_repository: TemplateRepository, tmp_path_factory: pytest.TempPathFactory
) -> Update:
    require_python("3.11", "render and update a service")
    work = tmp_path_factory.mktemp("update")
    path = render(work / "service", {}, template=template_repository.path, vcs_ref=PRE_CHANGE)
    answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
    service = Rendered("updated", path, answers)
    commit_all(path, f"render the template at {PRE_CHANGE}")
    make_team_edits(service)
    team_commit = commit_all(path, "the team's changes")
    team_files = {name: read(service, name) for name in TEAM_FILES}
    check_before = check_update(path)

    log = work / "update.log"
    with output_of_subprocesses(log):
        update(path, vcs_ref=template_repository.commit)
    status = git(path, "status", "--porcelain").splitlines()
    unmerged = git(path, "ls-files", "--unmerged")
    leftovers = merge_leftovers(path)
    update_commit = commit_all(path, "update to the template's working tree")
    return Update(
        template=template_repository,
        service=Rendered(
            "updated", path, yaml.safe_load((path / ".copier-answers.yml").read_text())
        ),
        team_commit=team_commit,
        update_commit=update_commit,
        team_files=team_files,
        check_before=check_before,
        output=log.read_text(encoding="utf-8"),
        status=status,
        unmerged=unmerged,
        leftovers=leftovers,
    )


def test_check_update_sees_the_newer_commit_of_the_branch(updated: Update) -> None:
    assert updated.check_before["update_available"] is True
    assert updated.check_before["current_version"].endswith(f"+{PRE_CHANGE}")
    assert updated.check_before["latest_version"].endswith(f"+{updated.service.answers['_commit']}")
    assert updated.template.commit.startswith(updated.service.answers["_commit"])


def test_the_update_leaves_no_conflicts(updated: Update) -> None:
    assert updated.unmerged == ""
    assert not [line for line in updated.status if line[:2] in {"UU", "AA", "DU", "UD"}]
    assert updated.leftovers == []
    assert "left conflicts" not in updated.output


def test_the_update_prints_what_the_changelog_added_since_the_services_version(
    updated: Update,
) -> None:
    output = updated.output
    changes = output[output.index(f"What changed in the template since {PRE_CHANGE}") :]
    assert "- `<project_slug> doctor`: checks the settings" in changes  # added after PRE_CHANGE
    assert "- `bench/` (`uv run --group bench python -m bench`)" not in changes  # there before


def test_the_migration_rewrote_the_imports_of_the_teams_files_only(updated: Update) -> None:
    package_name = updated.service.answers["package_name"]
    rewritten = [line for line in updated.output.splitlines() if "imports now from" in line]
    assert rewritten == [
        f"migration: imports now from {package_name}.runtime in {name.format(pkg=package_name)}"
        for name in REWRITTEN_IMPORTS
    ], updated.output


def runtime_imports(source: str) -> set[str]:
    """The modules named `runtime` or under one that `source` imports, with their leading dots."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            modules = ["." * node.level + (node.module or "")]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        found.update(module for module in modules if "runtime" in module.lstrip(".").split("."))
    return found


def test_the_teams_files_import_only_the_public_runtime(updated: Update) -> None:
    package_name = updated.service.answers["package_name"]
    for name in TEAM_FILES:
        assert runtime_imports(read(updated.service, name)) <= {
            ".runtime",
            f"{package_name}.runtime",
        }, name
    # The test of the assertion: before the update the same files imported the old modules.
    before = set().union(*(runtime_imports(text) for text in updated.team_files.values()))
    assert {".runtime.service", f"{package_name}.runtime.testing"} <= before


def test_the_teams_edits_are_intact_but_for_the_rewritten_imports(updated: Update) -> None:
    package_name = updated.service.answers["package_name"]
    for name in TEAM_FILES:
        expected = updated.team_files[name]
        if name in REWRITTEN_IMPORTS:
            old, new = (text.format(pkg=package_name) for text in REWRITTEN_IMPORTS[name])
            assert expected.count(old) == 1, name
            expected = expected.replace(old, new)
        assert read(updated.service, name) == expected, name
    assert TEAM_PROMPT in read(updated.service, "src/{pkg}/agent.py")
    assert "ticket_priority]" in read(updated.service, "src/{pkg}/tools.py")


def test_a_team_note_in_a_template_file_is_merged_with_the_templates_change(
    updated: Update,
) -> None:
    main = read(updated.service, "src/{pkg}/main.py")
    assert "from .runtime import create_app\n" in main
    assert main.endswith(TEAM_NOTE)


def test_a_team_edit_of_a_moved_runtime_module_is_kept_as_a_patch(updated: Update) -> None:
    package = updated.service.answers["package_name"]
    patch = (updated.service.path / "runtime-edits" / "errors.py.diff").read_text()
    assert f"+++ src/{package}/runtime/errors.py" in patch
    added = [line[1:] for line in patch.splitlines() if line.startswith("+") and line[1:2] != "+"]
    assert "# Team note: our gateway maps 499 to 504 before it reaches this service." in added
    assert f"src/{package}/runtime/_internal/errors.py" in updated.output
    # Only the module the team changed.
    assert sorted(p.name for p in (updated.service.path / "runtime-edits").iterdir()) == [
        "errors.py.diff"
    ]


def test_the_old_runtime_modules_are_gone_and_the_new_layout_is_there(updated: Update) -> None:
    package = f"src/{updated.service.answers['package_name']}"
    old_modules = git(
        updated.service.path, "ls-tree", "--name-only", updated.team_commit, f"{package}/runtime/"
    )
    assert f"{package}/runtime/service.py" in old_modules.split()
    remaining = [name for name in old_modules.split() if (updated.service.path / name).exists()]
    assert remaining == [f"{package}/runtime/__init__.py"]
    assert (updated.service.path / package / "runtime" / "_internal" / "__init__.py").is_file()


def test_the_setting_renamed_by_an_older_release_is_migrated_in_dotenv(updated: Update) -> None:
    prefix = updated.service.answers["env_prefix"]
    assert (
        updated.output.count("migration: setting model_timeout is now model_timeout_seconds") == 1
    )
    assert f".env: renamed {prefix}MODEL_TIMEOUT to {prefix}MODEL_TIMEOUT_SECONDS" in updated.output
    assert (updated.service.path / ".env").read_text() == TEAM_ENV.format(prefix=prefix).replace(
        "MODEL_TIMEOUT=", "MODEL_TIMEOUT_SECONDS="
    )


def test_the_service_reads_the_migrated_and_the_teams_settings(updated: Update) -> None:
    package_name = updated.service.answers["package_name"]
    code = (
        f"from {package_name}.settings import Settings; s = Settings(); "
        "print(s.model_timeout_seconds, s.escalation_severity)"
    )
    # Reads .env from the service's root; development mode lets it load without API keys.
    development = {f"{updated.service.answers['env_prefix']}ENVIRONMENT": "development"}
    result = updated.service.run("python", "-c", code, env=development)
    assert result.stdout.split() == ["12.0", "1"]


def test_the_lock_file_is_current(updated: Update) -> None:
    # The service's commands run with `--frozen`, which would not notice a stale lock.
    assert (updated.service.path / "uv.lock").is_file()
    locked = subprocess.run(
        ["uv", "lock", "--locked"],
        cwd=updated.service.path,
        env={
            **{name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"},
            "UV_PYTHON_DOWNLOADS": "never",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert locked.returncode == 0, locked.stderr


def test_the_updated_service_passes_ruff(updated: Update) -> None:
    updated.service.run("ruff", "check", ".")
    updated.service.run("ruff", "format", "--check", ".")


def test_the_updated_service_passes_its_own_tests_and_the_teams(updated: Update) -> None:
    result = updated.service.run("pytest", "-q", "-p", "no:cacheprovider", "-rA")
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout[-2000:]
    for team_test in (
        "tests/test_agent.py::test_the_agent_calls_the_teams_tool",
        "tests/test_tools.py::test_ticket_priority_names_the_priority",
        "tests/runtime/test_no_merge_leftovers.py::test_no_conflict_markers_are_left",
    ):
        assert f"PASSED {team_test}" in result.stdout, result.stdout[-2000:]


def test_the_updated_service_builds_its_docs_strictly(updated: Update) -> None:
    updated.service.run("mkdocs", "build", "--strict")


def test_the_migrations_find_nothing_left_in_the_updated_service(
    updated: Update, tmp_path: Path
) -> None:
    service = clone(updated.service, tmp_path / "migrated", updated.update_commit)
    env = (updated.service.path / ".env").read_text()
    (service.path / ".env").write_text(env)
    answers = service.answers
    commands = [
        [sys.executable, str(MIGRATIONS / "runtime_public_api.py"), answers["package_name"]],
        [
            sys.executable,
            str(MIGRATIONS / "rename_setting.py"),
            answers["env_prefix"],
            answers["package_name"],
            "model_timeout",
            "model_timeout_seconds",
        ],
    ]
    for command in commands * 2:
        result = subprocess.run(
            command, cwd=service.path, capture_output=True, text=True, check=True
        )
        assert result.stdout == "", result.stdout
    assert git(service.path, "status", "--porcelain") == ""
    assert (service.path / ".env").read_text() == env


def test_updating_again_changes_nothing(updated: Update, tmp_path: Path) -> None:
    service = clone(updated.service, tmp_path / "again", updated.update_commit)
    env = (updated.service.path / ".env").read_text()
    (service.path / ".env").write_text(env)
    # A page of the template's that the team does without: Copier must not bring it back, nor
    # stop on it. Copier 9.19 renders `_skip_if_exists` without the answers to match a file
    # the team deleted, so a pattern that names `package_name` stops the update there.
    (service.path / "docs" / "runbook.md").unlink()
    commit_all(service.path, "the team drops the runbook")

    log = tmp_path / "update.log"
    with output_of_subprocesses(log):
        update(service.path, vcs_ref=updated.template.commit, quiet=True)

    assert git(service.path, "status", "--porcelain") == ""
    assert not (service.path / "docs" / "runbook.md").exists()
    assert (service.path / ".env").read_text() == env
    assert "migration:" not in log.read_text(encoding="utf-8")
    check = check_update(service.path)
    assert check["update_available"] is False
    assert check["current_version"] == check["latest_version"]


def test_a_conflicting_edit_is_marked_inline_and_fails_the_leftover_check(
    updated: Update, tmp_path: Path
) -> None:
    service = clone(updated.service, tmp_path / "conflicted", updated.team_commit)
    module = f"src/{service.answers['package_name']}/main.py"
    # Right below the import line that the update rewrites.
    edit(
        service.path / module,
        lambda text: text.replace(
            "from .runtime.app import create_app\n",
            "from .runtime.app import create_app\n" + TEAM_CONFLICTING_EDIT,
        ),
    )
    commit_all(service.path, "a team edit where the template changes main.py")

    log = tmp_path / "update.log"
    with output_of_subprocesses(log):
        update(service.path, vcs_ref=updated.template.commit, skip_tasks=True, quiet=True)

    lines = (service.path / module).read_text().splitlines(keepends=True)
    assert f"{CONFLICT_OPENING}\n" in lines
    assert f"{CONFLICT_CLOSING}\n" in lines
    assert TEAM_CONFLICTING_EDIT in lines  # nothing is lost: both sides are there
    assert "from .runtime import create_app\n" in lines
    assert lines[-1] == TEAM_NOTE.lstrip("\n")  # and the rest of the file is still merged
    assert module in git(service.path, "ls-files", "--unmerged")
    assert list(service.path.rglob("*.rej")) == []
    output = log.read_text(encoding="utf-8")
    assert f"{module}: conflict markers on lines" in output
    # What the template changed comes first; what is left to resolve is the last word.
    assert output.index("What changed in the template since") < output.index("left conflicts in")
    # Without the conftest: the check must fail on its own account, whatever else the
    # conflicted file breaks.
    check = service.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--noconftest",
        "tests/runtime/test_no_merge_leftovers.py",
        check=False,
    )
    assert check.returncode == 1, check.stdout[-2000:]
    assert "1 failed, 1 passed" in check.stdout, check.stdout[-2000:]
    assert "FAILED tests/runtime/test_no_merge_leftovers.py::test_no_conflict_markers_are_left" in (
        check.stdout
    )
    assert module in check.stdout


def test_from_tagged_releases_the_update_goes_to_the_newest_tag_and_migrates(
    template_repository: TemplateRepository, tmp_path: Path
) -> None:
    require_python("3.11", "render and update a service")
    template = tmp_path / "released"
    git(tmp_path, "clone", "--quiet", str(template_repository.path), str(template))
    git(template, "tag", "0.2.0", PRE_CHANGE)
    git(template, "tag", "0.3.0", template_repository.commit)
    path = render(tmp_path / "service", {}, template=template, vcs_ref="0.2.0", skip_tasks=True)
    git(path, "init", "--quiet")
    commit_all(path, "render the template at 0.2.0")

    log = tmp_path / "update.log"
    with output_of_subprocesses(log):
        update(path, skip_tasks=True, quiet=True)  # no vcs_ref: the newest release

    answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "0.3.0"
    package_name = answers["package_name"]
    output = log.read_text(encoding="utf-8")
    for name, (_, new) in REWRITTEN_IMPORTS.items():
        if name.startswith("src/"):
            relative = name.format(pkg=package_name)
            assert f"imports now from {package_name}.runtime in {relative}\n" in output, output
            assert new in (path / relative).read_text()


# From the 0.3 layout: the team had edited two runtime modules that 0.4 split or moved.
TEAM_0_3_EDITS = {
    "_internal/agent/autogen_bridge.py": (
        """_AWAITING_APPROVAL = "This call waits for a person's approval."\n""",
        """_AWAITING_APPROVAL = "This call waits for the duty manager's approval."\n""",
    ),
    "_internal/http/schemas.py": (
        "StringConstraints(max_length=2_000)",
        "StringConstraints(max_length=8_000)",
    ),
}
# Named so by 0.3; 0.4 renames it, and still reads the old name.
TEAM_0_3_ENV = "{prefix}LOG_AUTOGEN_EVENTS=true\n"
# What proves the moved code works, and no more: the suite itself ran in the update from
# PRE_CHANGE. The engine boundary test fails if a module the update should have removed stayed.
MOVED_CODE_TESTS = (
    "tests/runtime/test_engine_boundary.py",
    "tests/runtime/test_api.py",
    "tests/runtime/test_history.py",
    "tests/runtime/test_upstream_faults.py",
    "tests/runtime/test_no_merge_leftovers.py",
)


@dataclass(frozen=True)
class UpdateFrom03:
    service: Rendered  # updated, not committed
    output: str
    unmerged: str
    leftovers: list[str]


@pytest.fixture(scope="module")
def updated_from_0_3(
    template_repository: TemplateRepository, tmp_path_factory: pytest.TempPathFactory
) -> UpdateFrom03:
    require_python("3.11", "render and update a service")
    work = tmp_path_factory.mktemp("update-from-0.3")
    path = render(work / "service", {}, template=template_repository.path, vcs_ref=LAYOUT_0_3)
    commit_all(path, f"render the template at {LAYOUT_0_3}")
    answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
    runtime = path / "src" / answers["package_name"] / "runtime"
    for name, (before, after) in TEAM_0_3_EDITS.items():
        edit(runtime / name, lambda text, before=before, after=after: text.replace(before, after))
    commit_all(path, "the team's changes")
    (path / ".env").write_text(TEAM_0_3_ENV.format(prefix=answers["env_prefix"]))

    log = work / "update.log"
    with output_of_subprocesses(log):
        update(path, vcs_ref=template_repository.commit)
    return UpdateFrom03(
        service=Rendered("updated-from-0.3", path, answers),
        output=log.read_text(encoding="utf-8"),
        unmerged=git(path, "ls-files", "--unmerged"),
        leftovers=merge_leftovers(path),
    )


def test_from_0_3_an_edit_of_a_split_or_moved_module_is_kept_as_a_patch(
    updated_from_0_3: UpdateFrom03,
) -> None:
    service = updated_from_0_3.service
    runtime = f"src/{service.answers['package_name']}/runtime"
    saved = service.path / "runtime-edits"
    assert sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()) == [
        f"{name}.diff" for name in sorted(TEAM_0_3_EDITS)
    ]
    for name, (before, after) in TEAM_0_3_EDITS.items():
        assert not (service.path / runtime / name).exists(), name
        patch = (saved / f"{name}.diff").read_text()
        assert f"+++ {runtime}/{name}\n" in patch
        hunks = patch.splitlines()[2:]  # below the two file names
        removed = [line[1:] for line in hunks if line.startswith("-")]
        added = [line[1:] for line in hunks if line.startswith("+")]
        assert len(removed) == len(added) == 1, patch
        assert before in removed[0] + "\n" and after in added[0] + "\n", patch
    output = updated_from_0_3.output
    assert f"its code is now in {runtime}/_internal/agent/ (engines/autogen/, turn.py, " in output
    assert f"its code is now in {runtime}/_internal/contract.py; " in output
    assert updated_from_0_3.unmerged == ""
    assert updated_from_0_3.leftovers == []


def test_from_0_3_the_renamed_engine_log_setting_is_migrated_in_dotenv(
    updated_from_0_3: UpdateFrom03,
) -> None:
    service = updated_from_0_3.service
    prefix = service.answers["env_prefix"]
    assert "migration: setting log_autogen_events is now log_engine_events" in (
        updated_from_0_3.output
    )
    assert (service.path / ".env").read_text() == f"{prefix}LOG_ENGINE_EVENTS=true\n"
    package_name = service.answers["package_name"]
    code = f"from {package_name}.settings import Settings; print(Settings().log_engine_events)"
    development = {f"{prefix}ENVIRONMENT": "development"}
    assert service.run("python", "-c", code, env=development).stdout.split() == ["True"]


def test_from_0_3_the_updated_service_passes_ruff_and_the_tests_of_what_moved(
    updated_from_0_3: UpdateFrom03,
) -> None:
    service = updated_from_0_3.service
    service.run("ruff", "check", ".")
    service.run("ruff", "format", "--check", ".")
    result = service.run("pytest", "-q", "-p", "no:cacheprovider", *MOVED_CODE_TESTS)
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout[-2000:]
    assert " failed" not in result.stdout and " error" not in result.stdout, result.stdout[-2000:]


# The pieces of an update that need no render.


def run_script(script: Path, *arguments: str, cwd: Path) -> str:
    command = [sys.executable, str(script), *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_the_rename_setting_migration_renames_once_and_only_the_setting(tmp_path: Path) -> None:
    settings = tmp_path / "src" / "app" / "settings.py"
    settings.parent.mkdir(parents=True)
    settings.write_text(
        "class Settings(RuntimeSettings):\n"
        "    model_timeout: float = 45.0  # APP_MODEL_TIMEOUT\n"
        "    model_timeout_budget: float = 1.0\n"
    )
    (tmp_path / ".env").write_text("app_model_timeout = 3\nAPP_MODEL_TIMEOUT_BUDGET=1\n")
    (tmp_path / ".env.production").write_text(
        "export APP_MODEL_TIMEOUT=9\nAPP_MODEL_TIMEOUT_SECONDS=10\n"
    )
    arguments = ("APP_", "app", "model_timeout", "model_timeout_seconds")

    first = run_script(MIGRATIONS / "rename_setting.py", *arguments, cwd=tmp_path)
    after_first = {path: path.read_text() for path in tmp_path.rglob("*") if path.is_file()}
    second = run_script(MIGRATIONS / "rename_setting.py", *arguments, cwd=tmp_path)

    assert settings.read_text() == (
        "class Settings(RuntimeSettings):\n"
        "    model_timeout_seconds: float = 45.0  # APP_MODEL_TIMEOUT_SECONDS\n"
        "    model_timeout_budget: float = 1.0\n"
    )
    assert (tmp_path / ".env").read_text() == (
        "APP_MODEL_TIMEOUT_SECONDS = 3\nAPP_MODEL_TIMEOUT_BUDGET=1\n"
    )
    # Both names set: the new one already wins, so the old line is pointed out, not merged.
    assert (tmp_path / ".env.production").read_text() == (
        "export APP_MODEL_TIMEOUT=9\nAPP_MODEL_TIMEOUT_SECONDS=10\n"
    )
    assert ".env.production: both APP_MODEL_TIMEOUT and APP_MODEL_TIMEOUT_SECONDS" in first
    assert first.count("renamed") == 3, first
    assert "renamed" not in second  # the line left unchanged is pointed out again, rightly
    assert {path: path.read_text() for path in tmp_path.rglob("*") if path.is_file()} == (
        after_first
    )


# A service of package `app` as the team left it before 0.3: every way its files import the old
# runtime modules, and the template's own `runtime/` directories, which the migration leaves to
# the merge.
OLD_IMPORTS = {
    "src/app/agent.py": '''\
"""The agent."""

from .runtime.service import AgentSpec
from .runtime.settings import (
    ENV_PREFIX,  # the prompt names it (in capitals)
    settings_reference,
)
from .runtime.tools import ToolError as TeamError
from .tools import TOOLS
''',
    "src/app/helpers.py": '''\
"""A module of the team's own."""

from .runtime import service
from .runtime.errors import ApiError
from .runtime.settings import RuntimeSettings, settings_reference
''',
    "src/app/settings.py": '''\
"""Already migrated."""

from .runtime import RuntimeSettings
''',
    "src/app/tools.py": "from .runtime.tools import ToolError, tool\n",
    "tests/test_agent.py": '''\
"""A test of the team's own."""

from app.runtime.service import AgentSpec as Spec
from app.runtime.testing import chat_body, serve
from app.tools import TOOLS
''',
    "src/app/runtime/service.py": "from app.runtime.tools import tool\n",
    "tests/runtime/test_api.py": "from app.runtime.testing import chat_body, serve\n",
}
NEW_IMPORTS = {
    "src/app/agent.py": '''\
"""The agent."""

from .runtime import (
    ENV_PREFIX,  # the prompt names it (in capitals)
    AgentSpec,
)
from .runtime import ToolError as TeamError
from .runtime._internal.settings import settings_reference
from .tools import TOOLS
''',
    "src/app/helpers.py": '''\
"""A module of the team's own."""

from .runtime import RuntimeSettings
from .runtime._internal.agent import service
from .runtime._internal.errors import ApiError
from .runtime._internal.settings import settings_reference
''',
    "src/app/tools.py": "from .runtime import ToolError, tool\n",
    "tests/test_agent.py": '''\
"""A test of the team's own."""

from app.runtime import AgentSpec as Spec
from app.runtime import chat_body, serve
from app.tools import TOOLS
''',
}


def test_the_runtime_import_migration_rewrites_the_teams_imports_once(tmp_path: Path) -> None:
    for name, text in OLD_IMPORTS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    script = MIGRATIONS / "runtime_public_api.py"

    first = run_script(script, "app", cwd=tmp_path)
    after_first = {path: path.read_text() for path in tmp_path.rglob("*.py")}
    second = run_script(script, "app", cwd=tmp_path)

    assert first.splitlines() == [
        f"migration: imports now from app.runtime in {name}" for name in NEW_IMPORTS
    ]
    for name, text in OLD_IMPORTS.items():
        assert (tmp_path / name).read_text() == NEW_IMPORTS.get(name, text), name
    assert second == ""
    assert {path: path.read_text() for path in tmp_path.rglob("*.py")} == after_first
    # As the service's ruff sorts imports: the rewritten blocks must pass its `ruff check`.
    ruff = [sys.executable, "-m", "ruff", "check", "--isolated", "--line-length=100"]
    sort_check = subprocess.run(
        [*ruff, "--select=I", *NEW_IMPORTS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert sort_check.returncode == 0, sort_check.stdout


# A template's runtime at some release, as paths under runtime/ with what each holds, and the
# team's edits of it: moved files, a file an answer removed, one unchanged, one kept.
RELEASED_RUNTIME = {
    "errors.py": "ERRORS = 1\n",
    "_internal/agent/autogen_bridge.py": "BRIDGE = 1\n",
    "_internal/http/schemas.py": "SCHEMAS = 1\n",
    "_internal/features/streaming.py": "STREAMING = 1\n",
    "_internal/kept.py": "KEPT = 1\n",
}
TEAM_RUNTIME_EDITS = {
    "_internal/agent/autogen_bridge.py": "BRIDGE = 1\n# Team: retries for our gateway.\n",
    "_internal/http/schemas.py": "SCHEMAS = 2  # Team: our clients send more.\n",
    "_internal/features/streaming.py": "STREAMING = 1\n# Team: a note.\n",
    "_internal/kept.py": "KEPT = 2\n",
}


def make_released_template(path: Path) -> str:
    """A Copier template holding RELEASED_RUNTIME, committed; the commit."""
    (path / "copier.yml").parent.mkdir(parents=True)
    (path / "copier.yml").write_text("package_name:\n  type: str\n  default: app\n")
    for name, text in RELEASED_RUNTIME.items():
        file = path / "src" / "{{package_name}}" / "runtime" / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    git(path, "init", "--quiet")
    return commit_all(path, "a release")


def test_the_keep_edits_migration_saves_each_edited_runtime_file_the_update_removed(
    tmp_path: Path,
) -> None:
    commit = make_released_template(tmp_path / "template")
    service = tmp_path / "service"
    runtime = service / "src" / "app" / "runtime"
    for name, text in {**RELEASED_RUNTIME, **TEAM_RUNTIME_EDITS}.items():
        (runtime / name).parent.mkdir(parents=True, exist_ok=True)
        (runtime / name).write_text(text)
    answers = {"_commit": commit, "_src_path": str(tmp_path / "template"), "package_name": "app"}
    (service / ".copier-answers.yml").write_text(yaml.safe_dump(answers))
    git(tmp_path, "init", "--quiet", str(service))
    commit_all(service, "the service as its team left it")
    # What the update deletes: the template no longer has these.
    removed = ["errors.py", *[name for name in TEAM_RUNTIME_EDITS if name != "_internal/kept.py"]]
    for name in removed:
        (runtime / name).unlink()

    output = run_script(MIGRATIONS / "keep_runtime_edits.py", "app", cwd=service)

    saved = service / "runtime-edits"
    assert sorted(str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file()) == [
        "_internal/agent/autogen_bridge.py.diff",
        "_internal/features/streaming.py.diff",
        "_internal/http/schemas.py.diff",
    ]
    patch = (saved / "_internal/http/schemas.py.diff").read_text()
    assert patch.endswith(
        "@@ -1 +1 @@\n-SCHEMAS = 1\n+SCHEMAS = 2  # Team: our clients send more.\n"
    )
    assert (
        "+# Team: retries for our gateway.\n"
        in (saved / "_internal/agent/autogen_bridge.py.diff").read_text()
    )
    lines = output.splitlines()
    assert len(lines) == 3, output
    bridge, streaming, schemas = lines
    assert bridge.startswith(
        "migration: your edit of src/app/runtime/_internal/agent/autogen_bridge.py is kept in "
        "runtime-edits/_internal/agent/autogen_bridge.py.diff: its code is now in "
        "src/app/runtime/_internal/agent/ (engines/autogen/, turn.py, engine.py, "
    ), bridge
    assert "the update removed the file; port the edit where it still applies" in streaming
    assert "its code is now in src/app/runtime/_internal/contract.py; port the edit there" in (
        schemas
    )
    assert all(line.endswith(", then delete runtime-edits/") for line in lines)

    # Once the update is committed, nothing is deleted any more: nothing to do.
    commit_all(service, "the update")
    assert run_script(MIGRATIONS / "keep_runtime_edits.py", "app", cwd=service) == ""


TEMPLATE_RUNTIME = "template/src/{{package_name}}/runtime"
CONDITIONAL_NAME = re.compile(r"\{%.*?%\}(?P<name>.*?)\{%.*?%\}")


def as_rendered(path: str) -> str:
    """A runtime file's path under runtime/ in a service: no Jinja, no `.jinja` suffix."""
    return CONDITIONAL_NAME.sub(r"\g<name>", path).removesuffix(".jinja")


def defined_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def test_the_migrations_know_where_every_removed_runtime_module_went(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(MIGRATIONS))
    keep_runtime_edits = __import__("keep_runtime_edits")
    runtime = TEMPLATE / TEMPLATE_RUNTIME
    # Each runtime file as a service has it, under runtime/, and its file in the template.
    now = {
        as_rendered(path.relative_to(runtime).as_posix()): path
        for path in runtime.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    then = git(TEMPLATE, "ls-tree", "-r", "-z", "--name-only", LAYOUT_0_3, f"{TEMPLATE_RUNTIME}/")
    removed = {
        as_rendered(name.removeprefix(f"{TEMPLATE_RUNTIME}/")) for name in then.split("\0") if name
    } - set(now)
    assert removed <= set(keep_runtime_edits.MOVED_FILES), (
        f"say where these went in MOVED_FILES of keep_runtime_edits.py: {sorted(removed)}"
    )
    for old, places in keep_runtime_edits.MOVED_FILES.items():
        for place in places:
            in_template = any(name.startswith(place) for name in now)
            assert in_template if place.endswith("/") else place in now, (
                f"MOVED_FILES sends {old} to {place}, which the template lacks"
            )
    # Where runtime_public_api.py points the team's imports of the old flat modules.
    public_api = sys.modules["runtime_public_api"]
    for old, new in public_api.MOVED_MODULES.items():
        module = new.replace(".", "/")
        assert f"{module}.py" in now or f"{module}/__init__.py" in now, (old, new)
    for name, new in public_api.MOVED_NAMES.items():
        module = now.get(f"{new.replace('.', '/')}.py")
        assert module and name in defined_names(module.read_text()), (name, new)


def run_leftover_check(project: Path) -> subprocess.CompletedProcess[str]:
    check = project / "tests" / "runtime" / LEFTOVER_CHECK.name
    check.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(LEFTOVER_CHECK, check)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", "."]
    return subprocess.run(
        [*command, str(check)], cwd=project, capture_output=True, text=True, check=False
    )


def test_the_leftover_check_finds_markers_and_rejected_hunks_only(tmp_path: Path) -> None:
    conflict = f"{CONFLICT_OPENING}\nours\n{'=' * 7}\ntheirs\n{CONFLICT_CLOSING}\n"
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "vendored.py").write_text(conflict)
    (tmp_path / "README.md").write_text("Markers such as <<<<<<< are fine inside a line.\n")
    assert run_leftover_check(tmp_path).returncode == 0  # nor does it find itself

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("# Notes\n" + conflict)
    (tmp_path / "pyproject.toml.rej").write_text("@@ -1 +1 @@\n")
    result = run_leftover_check(tmp_path)

    assert result.returncode == 1, result.stdout
    assert "2 failed" in result.stdout
    assert "'docs/notes.md': [2, 4, 6]" in result.stdout
    assert "['pyproject.toml.rej']" in result.stdout
    assert "vendored.py" not in result.stdout


def test_switching_the_engine_keeps_the_teams_files_and_passes_their_tests(
    updated: Update, tmp_path: Path
) -> None:
    """`copier update --data engine=agent_framework`: the runtime moves to the other engine,
    the team's files stay as they were, and the team's tests pass on it unchanged."""
    service = clone(updated.service, tmp_path / "to-agent-framework", updated.update_commit)
    team_files = {name: read(service, name) for name in TEAM_FILES}

    log = tmp_path / "update.log"
    with output_of_subprocesses(log):
        update(
            service.path,
            vcs_ref=updated.template.commit,
            data={"engine": "agent_framework"},
            quiet=True,
        )

    assert merge_leftovers(service.path) == [], log.read_text(encoding="utf-8")[-3000:]
    assert {name: read(service, name) for name in TEAM_FILES} == team_files
    engines = service.path / "src" / service.answers["package_name"] / "runtime"
    engines = engines / "_internal" / "agent" / "engines"
    packages = [p.name for p in engines.iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert packages == ["agent_framework"]
    dependencies = tomllib.loads(read(service, "pyproject.toml"))["project"]["dependencies"]
    assert not [d for d in dependencies if "autogen" in d]
    assert [d for d in dependencies if d.startswith("agent-framework-core")]
    service.run("ruff", "check", ".")
    result = service.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rA",
        "tests/test_agent.py",
        "tests/test_tools.py",
        "tests/runtime/test_engine_boundary.py",
    )
    for team_test in (
        "tests/test_agent.py::test_the_agent_calls_the_teams_tool",
        "tests/test_tools.py::test_ticket_priority_names_the_priority",
    ):
        assert f"PASSED {team_test}" in result.stdout, result.stdout[-2000:]


def test_switching_to_a_team_renders_the_example_team_and_keeps_the_teams_files(
    updated: Update, tmp_path: Path
) -> None:
    service = clone(updated.service, tmp_path / "to-a-team", updated.update_commit)
    package = f"src/{service.answers['package_name']}"
    before = {name: read(service, name) for name in (f"{package}/agent.py", f"{package}/tools.py")}

    log = tmp_path / "update.log"
    with output_of_subprocesses(log):
        update(
            service.path,
            vcs_ref=updated.template.commit,
            data={"agent_team": "swarm"},
            skip_tasks=True,
            quiet=True,
        )

    assert 'TeamSpec(kind="swarm"' in read(service, f"{package}/team.py")
    assert (service.path / "tests" / "test_team.py").is_file()
    assert {name: read(service, name) for name in before} == before
    # main.py changes its last line, next to which the team wrote a note: the merge keeps
    # both for the team to choose, and the leftover check points at them.
    main = read(service, f"{package}/main.py")
    assert "from .team import TEAM\n" in main and TEAM_NOTE.strip() in main
    assert "app = create_app(Settings.load(), TEAM)\n" in main
    assert merge_leftovers(service.path) == [str(service.path / package / "main.py")]
