"""Rendering the template, and running commands inside a rendered project."""

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import pytest

TEMPLATE = Path(__file__).resolve().parent.parent

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
        "session_store": "redis",
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
        result = subprocess.run(
            ["uv", "run", "--frozen", *command],
            cwd=self.path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"`{' '.join(command)}` failed in the {self.name} render:\n"
                f"{result.stdout[-6000:]}\n{result.stderr[-4000:]}"
            )
        return result


def require_python(version: str, purpose: str) -> None:
    """Skip the test when no Python >= `version` is on this machine (none is ever downloaded)."""
    found = subprocess.run(
        ["uv", "python", "find", "--no-python-downloads", f">={version}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        pytest.skip(f"no Python >= {version} on this machine to {purpose}")


def render(
    destination: Path,
    answers: dict[str, Any],
    *,
    template: Path = TEMPLATE,
    vcs_ref: str = "HEAD",
    **options: Any,
) -> Path:
    """Render a template: by default this one's working tree (uncommitted changes included)."""
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
