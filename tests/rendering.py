"""Rendering the template, and running commands inside a rendered project."""

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import pytest
from plumbum import local

TEMPLATE = Path(__file__).resolve().parent.parent
# A bound for a command that hangs, not a speed goal: a render's whole suite takes up to 13
# minutes on a core of its own, and in CI it shares two cores with another render's.
COMMAND_TIMEOUT_SECONDS = 1800
# A CPython release as pyenv names its directory: not a -dev build, PyPy or a virtualenv.
PYENV_CPYTHON = re.compile(r"3\.(\d+)(?:\.(\d+))?")
# What gives git an identity with no configuration at all.
GIT_IDENTITY_VARIABLES = (
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
)

# The second answer set changes every text question, with values that trip naive templating, and
# turns on the optional features that are off by default.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "custom": {
        "project_name": "Claims Triage",
        "project_slug": "claims-bot",
        "package_name": "claims_triage2",
        "description": 'Triage "urgent" insurance claims — quickly & safely',
        "author_name": "Zoë O'Brien",
        "author_email": "claims-team@example.org",
        "python_version": "3.12",
        "env_prefix": "CLAIMS_",
        "default_model": "llama3.1:8b",
        "agent_team": "selector",
        "session_store": "redis",
        "runs": "redis",
        "kubernetes": True,
    },
    # A team that hands over, asks the user and waits for approvals, with its state in Redis,
    # tools from MCP servers, an A2A server, and token budgets per key.
    "swarm": {
        "agent_team": "swarm",
        "session_store": "redis",
        "mcp_tools": True,
        "a2a": True,
        "budgets": True,
    },
    # A swarm on the second engine, Microsoft Agent Framework, with what it must carry: Redis
    # sessions and runs, the OpenAI-compatible API, tools from MCP servers, budgets. Its
    # runtime tests run a lone agent and the other kinds of team too.
    "agent_framework": {
        "engine": "agent_framework",
        "agent_team": "swarm",
        "session_store": "redis",
        "runs": "redis",
        "openai_api": True,
        "mcp_tools": True,
        "budgets": True,
    },
    # A selector on Agent Framework, its speaker chosen by the model through the service's
    # client, with durable runs and the A2A server on Redis sessions.
    "agent_framework_selector": {
        "engine": "agent_framework",
        "agent_team": "selector",
        "session_store": "redis",
        "runs": "redis",
        "a2a": True,
    },
    # Every optional feature off: what a team that wants none of them gets.
    "minimal": {
        "streaming": False,
        "auth": "none",
        "observability": "none",
        "docker": False,
        "ci": "none",
    },
}


@dataclass(frozen=True)
class Rendered:
    name: str
    path: Path
    answers: dict[str, Any]

    def run(
        self, *command: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the project's own uv environment (never downloading a Python)."""
        full_env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", **(env or {})}
        full_env.pop("VIRTUAL_ENV", None)  # the template's own environment must not leak in
        # A session of its own, so that a timeout stops the command's children too (a test
        # suite's servers and workers), not only uv.
        with subprocess.Popen(
            ["uv", "run", "--frozen", *command],
            cwd=self.path,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
                pytest.fail(
                    f"`{' '.join(command)}` took over {COMMAND_TIMEOUT_SECONDS} s in the "
                    f"{self.name} render:\n{stdout[-6000:]}\n{stderr[-4000:]}"
                )
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        if check and result.returncode != 0:
            pytest.fail(
                f"`{' '.join(command)}` failed in the {self.name} render:\n"
                f"{result.stdout[-6000:]}\n{result.stderr[-4000:]}"
            )
        return result


def uv_finds_python(version: str) -> bool:
    """Whether uv finds a Python >= `version` outside any virtual environment, downloading none."""
    request = f">={version}"
    found = subprocess.run(
        ["uv", "python", "find", "--system", "--no-project", "--no-python-downloads", request],
        capture_output=True,
        text=True,
    )
    return found.returncode == 0


def pyenv_root() -> Path | None:
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    answer = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=True)
    return Path(answer.stdout.strip())


def pyenv_python(version: str, root: Path) -> Path | None:
    """The interpreter of the oldest minor version >= `version` that pyenv has installed (its
    newest patch release): the one closest to what the render declares it supports."""
    lowest_minor = int(version.split(".")[1])
    candidates = []
    for directory in (root / "versions").glob("*"):
        release = PYENV_CPYTHON.fullmatch(directory.name)
        if release is None or int(release[1]) < lowest_minor:
            continue
        interpreter = directory / "bin" / f"python3.{release[1]}"
        if interpreter.is_file():
            candidates.append((int(release[1]), -int(release[2] or 0), interpreter))
    return min(candidates)[2] if candidates else None


def append_to_path(directory: Path) -> None:
    """Put `directory` last on the PATH of every later subprocess. Copier runs its tasks with
    plumbum's copy of the environment, taken when Copier was imported, so that copy changes too."""
    for environment in (os.environ, local.env):
        environment["PATH"] = f"{environment['PATH']}{os.pathsep}{directory}"


def require_python(version: str, purpose: str) -> None:
    """Make a Python >= `version` findable by uv for the rest of the session, or fail the test.

    pyenv's shims answer only for the versions selected in pyenv, so a version that pyenv has
    installed but not selected is added to the PATH. A missing interpreter fails rather than
    skips: `uv run pytest` must not pass without a render it could not run.
    """
    if uv_finds_python(version):
        return
    root = pyenv_root()
    interpreter = pyenv_python(version, root) if root else None
    if interpreter is None:
        pytest.fail(
            f"no Python >= {version} on this machine to {purpose}, and none is ever downloaded: "
            f"install one (`uv python install {version}` or `pyenv install {version}`), then "
            "run the tests again"
        )
    append_to_path(interpreter.parent)


def render(
    destination: Path,
    answers: dict[str, Any],
    *,
    template: Path = TEMPLATE,
    vcs_ref: str = "HEAD",
    **options: Any,
) -> Path:
    """Render a template: by default this one's working tree (uncommitted changes included).

    The tasks run as on a machine where git has no identity, so that every render ends the same
    whoever runs the tests: a git repository with no commit (hooks/initial_commit.py).
    """
    with local.env(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1"):
        for name in GIT_IDENTITY_VARIABLES:
            local.env.pop(name, None)
        copier.run_copy(
            str(template),
            destination,
            data=answers,
            defaults=True,
            unsafe=True,
            vcs_ref=vcs_ref,
            quiet=True,
            **options,
        )
    return destination


def text_of(path: Path) -> str:
    """A rendered file's text; nothing for an image, which Copier copies as it is."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return ""
