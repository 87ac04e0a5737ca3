"""`copier update` brings template fixes into a service whose team has already changed it.

A throwaway git repository of this template gets two tags. 0.2.0 is the working tree (it names
the setting `model_timeout_seconds` and ships the 0.2.0 migration) plus a runtime fix, a new
setting and edits to the team's files; 0.1.0 is the same tree from before the rename, with
`model_timeout`. A service is rendered at 0.1.0, changed by its team, committed and updated to
0.2.0, once for the whole module; each test checks one thing about the result.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml
from rendering import TEMPLATE, Rendered, render, require_python

OLD, NEW = "0.1.0", "0.2.0"
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
# The rename that the 0.2.0 migration (copier.yml `_migrations`) carries into services.
RENAMED = {"model_timeout_seconds": "model_timeout", "MODEL_TIMEOUT_SECONDS": "MODEL_TIMEOUT"}
# `_skip_if_exists` in copier.yml; `{pkg}` is the package's directory.
TEAM_OWNED = [
    "src/{pkg}/agent.py",
    "src/{pkg}/settings.py",
    "src/{pkg}/tools.py",
    "tests/test_tools.py",
]
MIGRATION = TEMPLATE / "hooks" / "migrations" / "rename_setting.py"
MIGRATION_HEADER = "migration: setting model_timeout is now model_timeout_seconds"
LEFTOVER_CHECK = TEMPLATE / "template" / "tests" / "runtime" / "test_no_merge_leftovers.py"
CONFLICT_OPENING, CONFLICT_CLOSING = "<" * 7 + " before updating", ">" * 7 + " after updating"
MERGE_MARKERS = ("<" * 7 + " ", "|" * 7 + " ", ">" * 7 + " ")

RUNTIME_FIX = "# 0.2.0: a request id is bound before anything else can log.\n"
NEW_SETTING = """\
    readiness_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Time limit of the readiness probe's model check."
    )

"""
TEMPLATE_EDIT_OF_TEAM_FILE = "# Template 0.2.0 would have changed this line.\n"
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
    # Our model server is slow. {prefix}{variable} in .env still wins.
    {field}: float = Field(
        45.0, gt=0, le=600, description="Time limit of one upstream attempt; our server is slow."
    )
'''
TEAM_NOTE = "\n\n# Team note: our gateway maps 499 to 504 before it reaches this service.\n"
TEAM_CONFLICTING_EDIT = "# Team: request ids come from our gateway.\n"


def git(repository: Path, *arguments: str) -> str:
    result = subprocess.run(
        [*GIT, *arguments], cwd=repository, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"`git {' '.join(arguments)}` failed in {repository}:\n{result.stderr}")
    return result.stdout


def commit_all(repository: Path, message: str) -> str:
    git(repository, "add", "--all")
    git(repository, "commit", "--quiet", "--no-verify", "--message", message)
    return git(repository, "rev-parse", "HEAD").strip()


def edit(path: Path, change: Callable[[str], str]) -> None:
    before = path.read_text(encoding="utf-8")
    after = change(before)
    assert after != before, f"the test's edit of {path} no longer applies; update the test"
    path.write_text(after, encoding="utf-8")


def before_first_import(insertion: str) -> Callable[[str], str]:
    """An edit that inserts a line right above a module's first import."""
    return lambda text: re.sub(r"^(?=(?:import|from) )", insertion, text, count=1, flags=re.M)


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
        service,
        defaults=True,
        overwrite=True,
        unsafe=True,
        skip_answered=True,
        vcs_ref=NEW,
        **options,
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


def make_template_repository(repository: Path) -> None:
    """This template's working tree, committed and tagged twice (see the module docstring)."""
    listed = git(TEMPLATE, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    files = [
        Path(name)
        for name in listed.split("\0")
        if name and (TEMPLATE / name).is_file() and "__pycache__" not in Path(name).parts
    ]
    for name in files:
        (repository / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(TEMPLATE / name, repository / name)
    git(repository, "init", "--quiet")

    # 0.1.0: the tree from before the rename. (Its copier.yml lists the 0.2.0 migration too,
    # which changes nothing: an update runs the migrations of the version it goes to.)
    rendered_sources = [name for name in files if name.parts[0] == "template"]
    for name in rendered_sources:
        text = (TEMPLATE / name).read_bytes().decode("utf-8", errors="surrogateescape")
        for new, old in RENAMED.items():
            text = text.replace(new, old)
        (repository / name).write_bytes(text.encode("utf-8", errors="surrogateescape"))
    commit_all(repository, "the template before the rename")
    git(repository, "tag", OLD)

    # 0.2.0: the rename (and its migration), a runtime fix, a new setting, and changes to the
    # team's files that `_skip_if_exists` must keep out of services.
    for name in rendered_sources:
        shutil.copy2(TEMPLATE / name, repository / name)
    package = repository / "template" / "src" / "{{package_name}}"
    edit(package / "runtime" / "request_context.py", before_first_import(RUNTIME_FIX))
    edit(
        package / "runtime" / "settings.py.jinja",
        lambda text: re.sub(r"^(?=    @)", NEW_SETTING, text, count=1, flags=re.M),
    )
    for team_file in (
        package / "agent.py.jinja",
        package / "settings.py.jinja",
        package / "tools.py",
        repository / "template" / "tests" / "test_tools.py.jinja",
    ):
        edit(team_file, before_first_import(TEMPLATE_EDIT_OF_TEAM_FILE))
    commit_all(repository, "the template with a fix, a setting and a migration")
    git(repository, "tag", NEW)


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
    """What a team does to its service: its own files, and a note in two runtime files."""
    package = service.path / "src" / service.answers["package_name"]
    prefix = service.answers["env_prefix"]
    edit(package / "agent.py", replace_prompt)
    edit(package / "tools.py", add_tool)
    settings = TEAM_SETTINGS.format(prefix=prefix, variable="MODEL_TIMEOUT", field="model_timeout")
    edit(package / "settings.py", lambda _: settings)
    edit(service.path / "tests" / "test_tools.py", add_tool_test)
    for runtime_file in ("errors.py", "request_context.py"):
        edit(package / "runtime" / runtime_file, lambda text: text + TEAM_NOTE)
    # Ignored by git: only the migration can carry it over to the new name.
    env = f"{prefix}LOG_LEVEL=DEBUG\nexport {prefix}MODEL_TIMEOUT=12\n"
    (service.path / ".env").write_text(env)


def clone(service: Rendered, destination: Path, commit: str) -> Rendered:
    """Another checkout of the service's repository, at `commit`."""
    git(destination.parent, "clone", "--quiet", str(service.path), str(destination))
    git(destination, "reset", "--quiet", "--hard", commit)
    return Rendered(destination.name, destination, service.answers)


@dataclass(frozen=True)
class Update:
    service: Rendered  # updated to NEW; the update is committed after the facts below are taken
    team_commit: str  # the service as the team left it, at OLD
    team_files: dict[str, str]  # TEAM_OWNED files at `team_commit`
    check_before: dict[str, Any]  # `copier check-update` before the update
    output: str  # what the update's tasks and migrations printed
    status: list[str]  # `git status --porcelain` right after the update
    unmerged: str  # `git ls-files --unmerged` right after the update


@pytest.fixture(scope="module")
def updated(tmp_path_factory: pytest.TempPathFactory) -> Update:
    require_python("3.11", "render and update a service")
    work = tmp_path_factory.mktemp("update")
    (work / "template").mkdir()
    make_template_repository(work / "template")

    path = render(work / "service", {}, template=work / "template", vcs_ref=OLD)
    answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
    service = Rendered("updated", path, answers)
    commit_all(path, f"render the template at {OLD}")
    make_team_edits(service)
    team_commit = commit_all(path, "the team's changes")
    team_files = {name: read(service, name) for name in TEAM_OWNED}
    check_before = check_update(path)

    log = work / "update.log"
    with output_of_subprocesses(log):
        update(path)
    answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
    result = Update(
        service=Rendered("updated", path, answers),
        team_commit=team_commit,
        team_files=team_files,
        check_before=check_before,
        output=log.read_text(encoding="utf-8"),
        status=git(path, "status", "--porcelain").splitlines(),
        unmerged=git(path, "ls-files", "--unmerged"),
    )
    commit_all(path, f"update to the template's {NEW}")
    return result


def test_check_update_reports_the_newer_version(updated: Update) -> None:
    assert updated.check_before == {
        "update_available": True,
        "current_version": OLD,
        "latest_version": NEW,
    }


def test_the_answers_record_the_new_version(updated: Update) -> None:
    assert updated.service.answers["_commit"] == NEW
    assert updated.service.answers["package_name"] == "support_desk"


def test_the_runtime_fix_and_the_new_setting_arrive(updated: Update) -> None:
    assert RUNTIME_FIX in read(updated.service, "src/{pkg}/runtime/request_context.py")
    runtime_settings = read(updated.service, "src/{pkg}/runtime/settings.py")
    assert NEW_SETTING in runtime_settings
    assert "model_timeout_seconds: float" in runtime_settings


def test_the_teams_files_are_never_overwritten(updated: Update) -> None:
    # 0.2.0 changed each of them in the template; `_skip_if_exists` kept every change out.
    for name in TEAM_OWNED:
        text = read(updated.service, name)
        assert TEMPLATE_EDIT_OF_TEAM_FILE not in text, name
        if name != "src/{pkg}/settings.py":  # the migration's, below
            assert text == updated.team_files[name], name
    assert "ticket_priority]" in read(updated.service, "src/{pkg}/tools.py")
    assert TEAM_PROMPT in read(updated.service, "src/{pkg}/agent.py")


def test_team_notes_in_runtime_files_are_merged_with_the_fix(updated: Update) -> None:
    for runtime_file in ("errors.py", "request_context.py"):
        assert read(updated.service, f"src/{{pkg}}/runtime/{runtime_file}").endswith(TEAM_NOTE)


def test_the_migration_renamed_the_setting_once(updated: Update) -> None:
    prefix = updated.service.answers["env_prefix"]
    assert updated.output.count(MIGRATION_HEADER) == 1, updated.output
    assert f"renamed {prefix}MODEL_TIMEOUT to {prefix}MODEL_TIMEOUT_SECONDS" in updated.output
    assert (updated.service.path / ".env").read_text() == (
        f"{prefix}LOG_LEVEL=DEBUG\nexport {prefix}MODEL_TIMEOUT_SECONDS=12\n"
    )
    assert read(updated.service, "src/{pkg}/settings.py") == TEAM_SETTINGS.format(
        prefix=prefix, variable="MODEL_TIMEOUT_SECONDS", field="model_timeout_seconds"
    )


def test_the_update_leaves_no_conflicts(updated: Update) -> None:
    assert updated.unmerged == ""
    assert not [line for line in updated.status if line[:2] in {"UU", "AA", "DU", "UD"}]
    assert merge_leftovers(updated.service.path) == []


def test_the_updated_service_passes_its_own_checks(updated: Update) -> None:
    updated.service.run("ruff", "check", ".")
    updated.service.run("ruff", "format", "--check", ".")
    result = updated.service.run("pytest", "-q", "-p", "no:cacheprovider")
    assert (updated.service.path / "tests" / "runtime" / LEFTOVER_CHECK.name).is_file()
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout[-2000:]


def test_the_service_reads_the_migrated_and_the_new_settings(updated: Update) -> None:
    package = updated.service.answers["package_name"]
    code = (
        f"from {package}.settings import Settings; s = Settings(); "
        "print(s.model_timeout_seconds, s.readiness_timeout_seconds, "
        "'model_timeout' in Settings.model_fields)"
    )
    # Reads .env from the service's root; development mode lets it load without API keys.
    development = {f"{updated.service.answers['env_prefix']}ENVIRONMENT": "development"}
    result = updated.service.run("python", "-c", code, env=development)
    assert result.stdout.split() == ["12.0", "5.0", "False"]


def test_a_conflicting_edit_is_marked_inline_and_fails_the_leftover_check(
    updated: Update, tmp_path: Path
) -> None:
    service = clone(updated.service, tmp_path / "conflicted", updated.team_commit)
    module = "src/{pkg}/runtime/request_context.py"
    path = service.path / module.format(pkg=service.answers["package_name"])
    edit(path, before_first_import(TEAM_CONFLICTING_EDIT))  # where 0.2.0 puts RUNTIME_FIX
    commit_all(service.path, "a team edit where the template's fix goes")

    update(service.path, skip_tasks=True, quiet=True)

    text = path.read_text()
    assert CONFLICT_OPENING in text.splitlines()
    assert CONFLICT_CLOSING in text.splitlines()
    assert TEAM_CONFLICTING_EDIT in text  # nothing is lost: both sides are there
    assert RUNTIME_FIX in text
    assert text.endswith(TEAM_NOTE)  # and the rest of the file is still merged
    assert path.relative_to(service.path).as_posix() in git(service.path, "ls-files", "--unmerged")
    assert list(service.path.rglob("*.rej")) == []
    # The conftest imports the conflicted module; the check must fail on its own account.
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
    assert "runtime/request_context.py" in check.stdout


def test_updating_again_without_a_template_change_changes_nothing(
    updated: Update, tmp_path: Path
) -> None:
    head = git(updated.service.path, "rev-parse", "HEAD").strip()
    service = clone(updated.service, tmp_path / "again", head)
    (service.path / ".env").write_text((updated.service.path / ".env").read_text())

    update(service.path, quiet=True)

    assert git(service.path, "status", "--porcelain") == ""
    assert (service.path / ".env").read_text() == (updated.service.path / ".env").read_text()
    assert check_update(service.path) == {
        "update_available": False,
        "current_version": NEW,
        "latest_version": NEW,
    }


# The two pieces of an update that need no render.


def run_migration(service: Path) -> str:
    command = [
        sys.executable,
        str(MIGRATION),
        "APP_",
        "app",
        "model_timeout",
        "model_timeout_seconds",
    ]
    return subprocess.run(command, cwd=service, capture_output=True, text=True, check=True).stdout


def test_the_migration_script_renames_once_and_only_the_setting(tmp_path: Path) -> None:
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

    first = run_migration(tmp_path)
    after_first = {path: path.read_text() for path in tmp_path.rglob("*") if path.is_file()}
    second = run_migration(tmp_path)

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
    assert "renamed" not in second
    assert {path: path.read_text() for path in tmp_path.rglob("*") if path.is_file()} == (
        after_first
    )


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
