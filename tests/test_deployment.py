"""The deployment artifacts of every answer set: Dockerfile, CI workflow, pre-commit config.

No Docker engine and no GitHub runner here: the Dockerfile is linted with hadolint and its build
stage is replayed (build context after .dockerignore, COPY, `uv sync`), the workflow is linted
with actionlint, and the pre-commit hooks that need no download are run.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rendering import Rendered

TOOLS = Path(sys.executable).parent  # hadolint, actionlint and pre-commit: the dev group's


def tool(name: str, *arguments: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    full_env.pop("VIRTUAL_ENV", None)  # hooks run `uv run` in the render, not in this project
    return subprocess.run(
        [str(TOOLS / name), *arguments],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerignore_pattern(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob: `*` and `?` stay within one path segment, `**` spans many."""
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(part, re.escape(part)) for part in parts))


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: the last matching pattern wins,
    and a pattern matches a path when it matches the path or one of its parent directories."""
    parents = path.split("/")
    candidates = ["/".join(parents[: index + 1]) for index in range(len(parents))]
    excluded = False
    for pattern in patterns:
        include = pattern.startswith("!")
        regex = dockerignore_pattern(pattern.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not include
    return excluded


def build_context(project: Path) -> list[str]:
    """The files `docker build .` sends from a clean clone: tracked or committable files, less
    what .dockerignore excludes."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    patterns = [
        line.strip()
        for line in (project / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return [path for path in listed if not ignored(path, patterns)]


def require_docker(rendered: Rendered) -> None:
    if not rendered.answers["docker"]:
        pytest.skip("this answer set has no Dockerfile")


def test_docker_files_are_rendered_only_when_asked_for(rendered: Rendered) -> None:
    for name in ("Dockerfile", ".dockerignore"):
        assert (rendered.path / name).is_file() == rendered.answers["docker"]


def test_the_dockerignore_pattern_rules() -> None:
    patterns = ["*", "!src/", "**/__pycache__", "!keep/**/*.txt"]
    assert ignored(".env", patterns)
    assert ignored(".venv/bin/python", patterns)
    assert not ignored("src/service/main.py", patterns)
    assert ignored("src/service/__pycache__/main.cpython-311.pyc", patterns)
    assert not ignored("keep/a/b/c.txt", patterns)
    assert ignored("keep/a/b/c.py", patterns)


def test_the_dockerfile_passes_hadolint(rendered: Rendered) -> None:
    require_docker(rendered)
    result = tool("hadolint", "--no-color", "Dockerfile", cwd=rendered.path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_build_stage_installs_the_service_from_the_build_context_alone(
    rendered: Rendered, tmp_path: Path
) -> None:
    """Replays the build stage's COPY and `uv sync` steps in a directory standing for /app,
    then runs the service from the virtual environment alone, as the final stage does."""
    require_docker(rendered)
    context = build_context(rendered.path)
    assert ".env" not in context and not any(path.startswith(".venv/") for path in context)
    instructions = dockerfile_instructions((rendered.path / "Dockerfile").read_text())
    final_stage = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    app = tmp_path / "app"
    app.mkdir()
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    copied = 0
    for keyword, arguments in instructions[:final_stage]:
        if keyword == "WORKDIR":
            assert arguments == "/app"
        if keyword == "COPY" and not arguments.startswith("--from"):
            *sources, destination = arguments.split()
            for source in sources:
                files = [p for p in context if p == source or p.startswith(source + "/")]
                assert files, f"COPY {source}: not in the build context"
                for path in files:
                    if path != source:  # a directory's files keep their place inside it
                        target = app / destination / Path(path).relative_to(source)
                    elif destination.endswith("/"):
                        target = app / destination / Path(path).name
                    else:
                        target = app / destination
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(rendered.path / path, target)
                    copied += 1
        if keyword == "RUN" and arguments.startswith("uv "):
            result = subprocess.run(
                shlex.split(arguments), cwd=app, env=env, capture_output=True, text=True
            )
            assert result.returncode == 0, f"RUN {arguments}:\n{result.stderr[-3000:]}"
    assert copied

    # The final stage copies /app/.venv only.
    shutil.rmtree(app / "src")
    keyword, arguments = instructions[-1]
    assert keyword == "CMD"
    executable = yaml.safe_load(arguments)[0]  # exec form: a JSON list
    assert (app / ".venv" / "bin" / executable).is_file()
    package, prefix = rendered.answers["package_name"], rendered.answers["env_prefix"]
    started = subprocess.run(
        [str(app / ".venv" / "bin" / "python"), "-c", f"import {package}.main"],
        cwd=tmp_path,
        # Building the app validates the settings; production ones would need API keys.
        env={**env, f"{prefix}ENVIRONMENT": "development"},
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stderr[-3000:]


def test_the_image_holds_the_tiktoken_encoding_the_default_model_needs(
    rendered: Rendered,
) -> None:
    require_docker(rendered)
    baked = re.search(
        r"get_encoding\(name\) for name in \(([^)]*)\)", (rendered.path / "Dockerfile").read_text()
    )
    assert baked, "the Dockerfile fetches no tiktoken encoding"
    # The service's own start-up code decides which encoding it loads; record its choice.
    package = rendered.answers["package_name"]
    probe = (
        "import tiktoken\n"
        f"from {package}.runtime._internal.agent.tokens import build_token_counter\n"
        f"from {package}.settings import Settings\n"
        "asked = []\n"
        "tiktoken.get_encoding = asked.append\n"
        "build_token_counter(Settings(token_counter='tiktoken'))\n"
        "print(*asked)\n"
    )
    prefix = rendered.answers["env_prefix"]
    needed = rendered.run(
        "python", "-c", probe, env={f"{prefix}ENVIRONMENT": "development"}
    ).stdout.split()
    assert needed and set(needed) <= set(re.findall(r"'([a-z0-9_]+)'", baked[1]))


# The oldest Kubernetes release still patched when the manifests were last checked.
KUBERNETES_VERSION = "1.33.0"


def test_the_kubernetes_manifests_and_compose_file_validate(rendered: Rendered) -> None:
    manifests = rendered.path / "deploy" / "kubernetes"
    if not rendered.answers["kubernetes"]:
        assert not manifests.exists() and not (rendered.path / "compose.yaml").exists()
        pytest.skip("this answer set has no Kubernetes manifests")
    files = sorted(str(path) for path in manifests.glob("*.yaml"))
    workers = ["worker.yaml"] if rendered.answers.get("runs", "none") == "redis" else []
    assert {Path(path).name for path in files} == {"api.yaml", "config.yaml", *workers}
    checked = tool(
        "kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, *files, cwd=rendered.path
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    compose = tool(
        "check-jsonschema",
        "--builtin-schema",
        "vendor.compose-spec",
        "compose.yaml",
        cwd=rendered.path,
    )
    assert compose.returncode == 0, compose.stdout + compose.stderr
    services = yaml.safe_load((rendered.path / "compose.yaml").read_text())["services"]
    assert ("worker" in services) == (rendered.answers.get("runs", "none") == "redis")
    assert ("redis" in services) == (rendered.answers["session_store"] == "redis")
    documents = [
        document for path in files for document in yaml.safe_load_all(Path(path).read_text())
    ]
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"][0] == rendered.answers["project_slug"]
        assert {key for ref in container["envFrom"] for key in ref} == {"secretRef", "configMapRef"}
    api = next(d for d in documents if d["kind"] == "Deployment" and "api" in d["metadata"]["name"])
    [container] = api["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_ci_workflow_is_rendered_only_when_asked_for(rendered: Rendered) -> None:
    workflow = rendered.path / ".github" / "workflows" / "ci.yml"
    assert workflow.is_file() == (rendered.answers["ci"] == "github")
    if rendered.answers["ci"] == "none":
        assert not (rendered.path / ".github").exists()


def test_the_ci_workflow_passes_actionlint_and_runs_every_check(rendered: Rendered) -> None:
    if rendered.answers["ci"] != "github":
        pytest.skip("this answer set has no CI workflow")
    result = tool("actionlint", "-no-color", cwd=rendered.path)
    assert result.returncode == 0, result.stdout + result.stderr

    workflow = yaml.safe_load((rendered.path / ".github" / "workflows" / "ci.yml").read_text())
    assert list(workflow["jobs"]) == ["check", "evals"]
    job = workflow["jobs"]["check"]
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    for command in (
        "uv sync --frozen",
        "ruff check .",
        "ruff format --check .",
        "pytest",
        "mkdocs build --strict",
    ):
        assert command in runs
    assert ("apt-get install" in runs and "redis-server" in runs) == (
        rendered.answers["session_store"] == "redis"
    )
    assert "apt-get install" in runs and "chromium" in runs  # for the API docs page test
    uploaded = [
        step["with"]["path"] for step in job["steps"] if "upload-artifact" in step.get("uses", "")
    ]
    assert uploaded == ["tests-artifacts/"]  # its screenshots
    pythons = [
        step["with"]["python-version"]
        for step in job["steps"]
        if "setup-python" in step.get("uses", "")
    ]
    assert pythons == [rendered.answers["python_version"]]

    # The evaluation replays its recordings in a job of its own, and keeps its report.
    evals = workflow["jobs"]["evals"]["steps"]
    slug = rendered.answers["project_slug"]
    assert f"uv run --frozen {slug} eval evals/support.jsonl" in "\n".join(
        step.get("run", "") for step in evals
    )
    assert [s["with"]["path"] for s in evals if "upload-artifact" in s.get("uses", "")] == [
        "eval-report.json"
    ]


def test_the_pre_commit_config_is_valid_and_guards_against_update_leftovers(
    rendered: Rendered, tmp_path: Path
) -> None:
    config_path = rendered.path / ".pre-commit-config.yaml"
    result = tool("pre-commit", "validate-config", str(config_path), cwd=rendered.path)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(config_path.read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert {"check-merge-conflict", "ruff-check", "ruff-format", "no-update-leftovers"} <= set(
        hooks
    )
    # Without it the hook looks for conflict markers only while git is merging.
    assert "--assume-in-merge" in hooks["check-merge-conflict"]["args"]

    # Remote hooks are fetched over the network on first use; the local ones run here.
    local = {**config, "repos": [repo for repo in config["repos"] if repo["repo"] == "local"]}
    local_config = tmp_path / "local-hooks.yaml"
    local_config.write_text(yaml.safe_dump(local))
    home = str(tmp_path / "pre-commit-home")

    def run_hooks(*files: str) -> subprocess.CompletedProcess[str]:
        return tool(
            "pre-commit",
            "run",
            "--config",
            str(local_config),
            "--files",
            *files,
            cwd=rendered.path,
            PRE_COMMIT_HOME=home,
            RUFF_NO_CACHE="true",  # the render is shared: leave no cache of the planted files
        )

    package = rendered.answers["package_name"]
    clean = run_hooks(f"src/{package}/main.py")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "ruff check" in clean.stdout and "Passed" in clean.stdout

    planted = [rendered.path / "leftover.py.rej", rendered.path / "unused_import.py"]
    planted[0].write_text("@@ -1 +1 @@\n")
    planted[1].write_text("import os\n")
    try:
        dirty = run_hooks(*(path.name for path in planted))
    finally:
        for path in planted:
            path.unlink()
    assert dirty.returncode == 1
    assert "leftover.py.rej" in dirty.stdout
    assert "F401" in dirty.stdout  # ruff check's unused import
