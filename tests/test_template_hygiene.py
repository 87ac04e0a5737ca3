"""What the template does around its renders: finding the Pythons the renders need, the tasks
that commit a new service and report an update's conflicts, and what this repository ignores."""

import os
import subprocess
import sys
from pathlib import Path

import copier
import pytest
import yaml
from plumbum import local
from rendering import (
    GIT_IDENTITY_VARIABLES,
    TEMPLATE,
    VARIANTS,
    pyenv_python,
    pyenv_root,
    require_python,
    uv_finds_python,
)
from test_update import make_template_repository

HOOKS = TEMPLATE / "hooks"
IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "template-tests@example.com",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "template-tests@example.com",
}
CONFLICT = f"{'<' * 7} before updating\nours\n{'=' * 7}\ntheirs\n{'>' * 7} after updating\n"


def environment_without_git_identity(tmp_path: Path) -> dict[str, str]:
    """This process's environment as on a machine where nobody told git who the user is, and
    outside this template's own virtual environment, as a user runs `copier copy`."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in GIT_IDENTITY_VARIABLES and name != "VIRTUAL_ENV"
    }
    empty_config = tmp_path / "empty.gitconfig"
    empty_config.touch()
    return {
        **environment,
        "GIT_CONFIG_GLOBAL": str(empty_config),
        "GIT_CONFIG_NOSYSTEM": "1",
        "UV_PYTHON_DOWNLOADS": "never",
    }


def git(
    repository: Path, *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *arguments],
        cwd=repository,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def commits(repository: Path) -> int:
    return int(git(repository, "rev-list", "--count", "--all").stdout)


def run_hook(name: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HOOKS / name)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


# The Pythons of the renders.


def test_a_missing_python_fails_the_test_and_says_what_to_install() -> None:
    # BaseException: a skip must be caught as well, for this test to fail on it.
    with pytest.raises(BaseException) as stopped:
        require_python("3.99", "render a service")
    assert stopped.type is pytest.fail.Exception
    assert "uv python install 3.99" in str(stopped.value)


def test_the_oldest_sufficient_cpython_that_pyenv_installed_is_chosen(tmp_path: Path) -> None:
    installed = {
        "3.11.7": "3.11",
        "3.12.1": "3.12",
        "3.12.10": "3.12",
        "3.13.0": "3.13",
        "3.12-dev": "3.12",
        "pypy3.12-7.3.19": "3.12",
        "claims-venv": "3.12",
    }
    for name, minor in installed.items():
        interpreter = tmp_path / "versions" / name / "bin" / f"python{minor}"
        interpreter.parent.mkdir(parents=True)
        interpreter.touch()

    assert pyenv_python("3.12", tmp_path) == tmp_path / "versions/3.12.10/bin/python3.12"
    assert pyenv_python("3.11", tmp_path) == tmp_path / "versions/3.11.7/bin/python3.11"
    assert pyenv_python("3.14", tmp_path) is None


def test_a_python_pyenv_installed_but_did_not_select_is_found_by_uv_and_copier_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    version = VARIANTS["custom"]["python_version"]
    root = pyenv_root()
    # As before any render: the session may already have put pyenv's versions on the PATH.
    path = os.pathsep.join(
        entry
        for entry in os.environ["PATH"].split(os.pathsep)
        if root is None or not Path(entry).is_relative_to(root / "versions")
    )
    for environment in (os.environ, local.env):
        monkeypatch.setitem(environment, "PATH", path)
        monkeypatch.delitem(environment, "PYENV_VERSION", raising=False)

    require_python(version, "run the custom render")

    assert uv_finds_python(version)
    assert local.env["PATH"] == os.environ["PATH"]  # what Copier's tasks run with


# The first commit of a new service (hooks/initial_commit.py).


def copy_service(destination: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`copier copy` of this working tree with the default answers, tasks included."""
    command = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults"]
    command += ["--vcs-ref", "HEAD", str(TEMPLATE), str(destination)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_a_copy_with_a_git_identity_ends_committed_and_ready_to_update(tmp_path: Path) -> None:
    service = tmp_path / "service"
    copied = copy_service(service, {**environment_without_git_identity(tmp_path), **IDENTITY})

    assert copied.returncode == 0, copied.stderr[-3000:]
    assert "Committed the rendered service as Template Tests <template-tests@" in copied.stdout
    assert git(service, "status", "--porcelain").stdout == ""
    assert commits(service) == 1
    assert "uv.lock" in git(service, "ls-files").stdout.split()


def test_a_copy_without_a_git_identity_says_how_to_make_the_first_commit(tmp_path: Path) -> None:
    service = tmp_path / "service"
    copied = copy_service(service, environment_without_git_identity(tmp_path))

    assert copied.returncode == 0, copied.stderr[-3000:]
    assert (service / ".git").is_dir()
    assert commits(service) == 0
    assert "git has no user.name and user.email here" in copied.stdout
    assert 'git config --global user.email "you@example.com"' in copied.stdout
    assert f"cd {service} && git add --all && git commit -m" in copied.stdout


def test_the_first_commit_is_only_made_in_the_services_own_new_repository(
    tmp_path: Path,
) -> None:
    env = {**environment_without_git_identity(tmp_path), **IDENTITY}
    monorepo = tmp_path / "monorepo"
    monorepo.mkdir()
    git(monorepo, "init", "--quiet", env=env)
    (monorepo / "README.md").write_text("Our services.\n")
    git(monorepo, "add", "--all", env=env)
    git(monorepo, "commit", "--quiet", "-m", "start", env=env)
    (monorepo / "service").mkdir()  # copied into a repository: init_git.py made none
    (monorepo / "service" / "pyproject.toml").write_text("[project]\n")

    for directory in (monorepo / "service", monorepo):  # the second: `copier recopy`
        ran = run_hook("initial_commit.py", directory, env)
        assert (ran.returncode, ran.stdout) == (0, ""), ran.stderr
        assert commits(monorepo) == 1


# A template given by a relative path (hooks/record_template_path.py), what a copy says to do
# next (`_message_after_copy`), and what an update says changed (hooks/report_template_changes.py).

CHANGELOG_ENTRY = "- The entry that the update to the newest version must print."


def add_changelog_entry(template: Path) -> None:
    changelog = template / "CHANGELOG.md"
    text = changelog.read_text()
    first_section = text.index("\n## ")
    heading_end = text.index("\n", first_section + 1)
    changelog.write_text(f"{text[: heading_end + 1]}\n{CHANGELOG_ENTRY}\n{text[heading_end + 1 :]}")
    env = {**os.environ, **IDENTITY}
    committed = git(template, "commit", "--quiet", "--all", "--message", "A new entry", env=env)
    assert committed.returncode == 0, committed.stderr


def test_a_copy_from_a_relative_path_can_be_updated_from_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    require_python("3.11", "copy and update a service")
    template = make_template_repository(tmp_path / "template").path
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with local.env(**IDENTITY):
        copier.run_copy(
            "../template",
            "service",
            defaults=True,
            unsafe=True,
            vcs_ref="HEAD",
        )
    copied = capfd.readouterr()
    service = work / "service"
    answers = yaml.safe_load((service / ".copier-answers.yml").read_text())

    assert answers["_src_path"] == str(template.resolve())
    assert f"Recorded the template as {template.resolve()}" in copied.out
    assert git(service, "status", "--porcelain").stdout == ""  # committed with the path
    next_steps = copied.err[copied.err.index("Next steps:") :].splitlines()
    assert next_steps[1].strip() == "cd service"
    assert next_steps[2].split("#")[0].strip() == "uv run support-desk dev"
    assert next_steps[3].split("#")[0].strip() == "open http://127.0.0.1:8000/playground"
    assert next_steps[4].split("#")[0].strip() == "uv run pytest"
    readme = (service / "README.md").read_text()
    assert "redis-server" not in readme
    assert "support-desk worker" not in readme
    assert "runs" not in answers  # not asked without Redis sessions

    add_changelog_entry(template)
    monkeypatch.chdir(service)
    copier.run_update(
        ".",
        data={"session_store": "redis", "runs": "redis"},
        defaults=True,
        overwrite=True,
        unsafe=True,
        skip_answered=True,
        vcs_ref="HEAD",
    )
    updated = capfd.readouterr().out

    readme = (service / "README.md").read_text()
    assert "redis-server" in readme
    assert "`SUPPORT_DESK_REDIS_URL`" in readme
    assert "uv run support-desk worker" in readme
    assert "What changed in the template since" in updated
    changes = updated[updated.index("What changed in the template since") :]
    assert CHANGELOG_ENTRY in changes
    assert "`<project_slug> doctor`" not in changes  # in the version the service came from


def test_the_changes_of_a_changelog_are_the_entries_the_old_one_lacks(tmp_path: Path) -> None:
    template = tmp_path / "template"
    template.mkdir()
    env = {**os.environ, **IDENTITY}
    git(template, "init", "--quiet", env=env)
    old = (
        "# Changelog\n\nPreamble.\n\n## Unreleased\n\n### Added\n- Kept,\n  on two lines.\n"
        "\n### Fixed\n- An old fix.\n\n## 0.1.0\n\n- The first release.\n"
    )
    (template / "CHANGELOG.md").write_text(old)
    git(template, "add", "--all", env=env)
    git(template, "commit", "--quiet", "--message", "old", env=env)
    old_commit = git(template, "rev-parse", "HEAD").stdout.strip()
    rewrapped_and_new = "- Kept, on\n  two lines.\n- New, and\n  long.\n"
    new = old.replace("- Kept,\n  on two lines.\n", rewrapped_and_new)
    new = new.replace("## Unreleased\n", "## 0.2.0\n\nWhat a team must do: nothing.\n")
    (template / "CHANGELOG.md").write_text(new)

    def report(version_from: str) -> str:
        versions = {"VERSION_FROM": version_from, "VERSION_TO": "HEAD"}
        ran = subprocess.run(
            [sys.executable, str(HOOKS / "report_template_changes.py"), str(template)],
            env={**os.environ, **versions},
            capture_output=True,
            text=True,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        return ran.stdout

    assert report(old_commit) == (
        f"What changed in the template since {old_commit} (its CHANGELOG.md):\n"
        "## 0.2.0\nWhat a team must do: nothing.\n### Added\n- New, and\n  long.\n\n"
    )
    assert "could not read that version's" in report("0" * 40)


def test_a_url_or_an_absolute_template_path_is_recorded_as_given(tmp_path: Path) -> None:
    for source in ("https://example.com/template.git", "gh:owner/template", "/srv/template"):
        answers = tmp_path / ".copier-answers.yml"
        answers.write_text(f"_commit: abc1234\n_src_path: {source}\nproject_name: X\n")
        ran = subprocess.run(
            [sys.executable, str(HOOKS / "record_template_path.py"), str(tmp_path), str(answers)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (ran.returncode, ran.stdout) == (0, ""), ran.stderr
        assert yaml.safe_load(answers.read_text())["_src_path"] == source


# The conflicts an update leaves (hooks/report_conflicts.py).


def test_the_conflicts_an_update_left_are_listed_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "vendored.py").write_text(CONFLICT)
    (tmp_path / "README.md").write_text("Markers such as <<<<<<< are fine inside a line.\n")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\0\n" + CONFLICT.encode())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("# Notes\n" + CONFLICT)
    (tmp_path / "pyproject.toml.rej").write_text("@@ -1 +1 @@\n")

    report = run_hook("report_conflicts.py", tmp_path, dict(os.environ))

    assert report.returncode == 0
    assert "left conflicts in 2 file(s)" in report.stdout
    assert "  docs/notes.md: conflict markers on lines 2, 4, 6\n" in report.stdout
    assert "  pyproject.toml.rej: changes that could not be applied\n" in report.stdout
    assert "uv run pytest" in report.stdout
    assert "vendored.py" not in report.stdout
    assert "README.md" not in report.stdout
    assert "logo.png" not in report.stdout


def test_an_update_without_conflicts_reports_nothing(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Service\n\n" + "=" * 7 + " is a heading rule.\n")

    report = run_hook("report_conflicts.py", tmp_path, dict(os.environ))

    assert (report.returncode, report.stdout) == (0, "")


# This repository's .gitignore.

TOOL_OUTPUT = [
    ".venv/bin/python",
    "tests/__pycache__/rendering.cpython-311.pyc",
    ".pytest_cache/v/cache/nodeids",
    ".ruff_cache/CACHEDIR.TAG",
    ".hypothesis/examples/0a1b",
    ".schemathesis/report.json",
    "site/index.html",
    "autogen_service_template.egg-info/PKG-INFO",
]


def test_the_repository_ignores_what_its_tools_leave_behind() -> None:
    # --verbose names the ignoring file: the caches' own .gitignore files must not be needed.
    checked = git(TEMPLATE, "check-ignore", "--no-index", "--verbose", *TOOL_OUTPUT)
    sources = {line.split("\t")[1]: line.split(":")[0] for line in checked.stdout.splitlines()}
    assert sources == dict.fromkeys(TOOL_OUTPUT, ".gitignore")
    assert git(TEMPLATE, "ls-files", "--cached", "--ignored", "--exclude-standard").stdout == ""
