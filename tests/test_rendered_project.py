"""Every answer set renders a project whose own lint and test commands pass."""

import json
import re
import tomllib
from typing import Any

import pytest
from rendering import TEMPLATE, VARIANTS, Rendered, text_of

# A Jinja expression or statement; plain `}}` closing nested dicts is fine.
UNRENDERED = re.compile(r"{{-?\s*[A-Za-z_][\w.]*\s*(\||-?}})|{%-?\s*[a-z]+\b")


def test_no_template_syntax_is_left(rendered: Rendered) -> None:
    leftovers = []
    for path in rendered.path.rglob("*"):
        if ".git" in path.parts or ".venv" in path.parts or not path.is_file():
            continue
        in_name = path.suffix == ".jinja" or UNRENDERED.search(str(path.relative_to(rendered.path)))
        in_text = path.name != "uv.lock" and UNRENDERED.search(text_of(path))
        if in_name or in_text:
            leftovers.append(str(path))
    assert leftovers == []


def test_answers_are_recorded_for_copier_update(rendered: Rendered) -> None:
    expected = VARIANTS[rendered.name]
    assert {key: rendered.answers[key] for key in expected} == expected
    assert rendered.answers["_src_path"]
    assert rendered.answers["_commit"]


def test_answers_shape_the_project(rendered: Rendered) -> None:
    answers = rendered.answers
    pyproject = tomllib.loads((rendered.path / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["name"] == answers["project_slug"]
    assert project["description"] == answers["description"]
    author = {"name": answers["author_name"], "email": answers["author_email"]}
    assert project["authors"] == [author]
    assert project["requires-python"] == f">={answers['python_version']}"
    assert project["scripts"] == {
        answers["project_slug"]: f"{answers['package_name']}.runtime._internal.ops.cli:main"
    }
    package = rendered.path / "src" / answers["package_name"]
    assert (package / "main.py").is_file()
    rendered_answers = (package / "runtime" / "_internal" / "project.py").read_text()
    assert f'ENV_PREFIX = "{answers["env_prefix"]}"' in rendered_answers
    assert f'DEFAULT_MODEL = "{answers["default_model"]}"' in rendered_answers


def test_the_git_repository_and_lock_file_are_made(rendered: Rendered) -> None:
    assert (rendered.path / ".git").is_dir()
    assert (rendered.path / "uv.lock").is_file()


def test_ruff_passes(rendered: Rendered) -> None:
    rendered.run("ruff", "check", ".")
    rendered.run("ruff", "format", "--check", ".")


def test_the_projects_own_test_suite_passes(rendered: Rendered) -> None:
    result = rendered.run("pytest", "-q", "-p", "no:cacheprovider")
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout[-2000:]


def test_the_console_script_validates_settings_before_serving(rendered: Rendered) -> None:
    slug, prefix = rendered.answers["project_slug"], rendered.answers["env_prefix"]
    result = rendered.run(slug, "serve", check=False, env={f"{prefix}MODEL_PROVIDER": "openai"})
    assert result.returncode == 2
    assert f"{prefix}MODEL_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_to_start_without_api_keys(rendered: Rendered) -> None:
    if rendered.answers["auth"] != "api_key":
        pytest.skip("rendered with auth: none")
    slug, prefix = rendered.answers["project_slug"], rendered.answers["env_prefix"]
    result = rendered.run(slug, "serve", check=False)
    assert result.returncode == 2
    assert f"{prefix}API_KEYS is empty" in result.stderr
    assert f"{prefix}ENVIRONMENT=development" in result.stderr


def test_the_trimming_benchmark_runs_and_prints_its_figure(rendered: Rendered) -> None:
    result = rendered.run("python", "benchmarks/trim_history.py")
    figure = re.search(r"trim 2000 messages to \d+ tokens: median ([\d.]+) ms", result.stdout)
    assert figure, result.stdout
    print(result.stdout.strip())  # a figure to read with -s, not a timed assertion


def test_the_docs_site_builds_strictly_with_every_setting(rendered: Rendered, tmp_path) -> None:
    site = tmp_path / "site"
    rendered.run("mkdocs", "build", "--strict", "--site-dir", str(site))
    reference = (site / "configuration" / "index.html").read_text()
    prefix = rendered.answers["env_prefix"]
    package = rendered.answers["package_name"]
    listing = f"from {package}.settings import Settings; print(*Settings.model_fields)"
    fields = rendered.run("python", "-c", listing).stdout.split()
    assert fields
    assert all(f"{prefix}{field.upper()}" in reference for field in fields)
    # Nothing loads from another host, so the site reads the same offline: no web fonts, and
    # no diagram whose library the theme would fetch from a CDN.
    pages = "\n".join(page.read_text() for page in site.rglob("*.html"))
    assert re.findall(r'<(?:script|link)[^>]*(?:src|href)="(?:https?:)?//[^"]*"', pages) == []
    assert 'class="mermaid"' not in pages
    assert not (site / "hooks").exists()  # the build's own hook is not published


# The template's README shows a reply of the service rendered with the default answers.
HELLO = """  -d '{"messages": [{"role": "user", "content": "Hello"}]}'"""
ANY_VALUE = "…"
ASK_THE_APP = """
import json
from fastapi.testclient import TestClient
from {package}.main import app

with TestClient(app) as client:
    answer = client.post(
        "/v1/chat",
        headers={{"authorization": "Bearer dev-key"}},
        json={{"messages": [{{"role": "user", "content": "Hello"}}]}},
    )
print(json.dumps(answer.json()))
"""


def readme_sample_reply() -> Any:
    """The reply printed as comments under the README's "Hello" request; `…` is any value."""
    lines = (TEMPLATE / "README.md").read_text().splitlines()
    after_request = lines[lines.index(HELLO) + 1 :]
    comments = []
    for line in after_request:
        if not line.startswith("#"):
            break
        comments.append(line.removeprefix("#"))
    unquoted_any = re.compile(f'(?<!"){ANY_VALUE}(?!")')
    return json.loads(unquoted_any.sub(f'"{ANY_VALUE}"', "".join(comments)))


def masked_like(real: Any, sample: Any) -> Any:
    """`real` with `…` wherever the sample shows any value."""
    if sample == ANY_VALUE:
        return ANY_VALUE
    if isinstance(real, dict) and isinstance(sample, dict):
        return {key: masked_like(value, sample.get(key)) for key, value in real.items()}
    if isinstance(real, list) and isinstance(sample, list) and len(real) == len(sample):
        return [masked_like(item, shown) for item, shown in zip(real, sample, strict=True)]
    return real


def test_the_template_readmes_sample_reply_is_what_the_service_answers(
    defaults_render: Rendered,
) -> None:
    answers = defaults_render.answers
    prefix, package = answers["env_prefix"], answers["package_name"]
    asked = defaults_render.run(
        "python",
        "-c",
        ASK_THE_APP.format(package=package),
        env={f"{prefix}API_KEYS": "dev-key"},
    )
    real = json.loads(asked.stdout.strip().splitlines()[-1])
    sample = readme_sample_reply()
    assert masked_like(real, sample) == sample


def test_the_readme_says_how_to_start_what_the_answers_need(rendered: Rendered) -> None:
    readme = (rendered.path / "README.md").read_text()
    answers = rendered.answers
    sessions = answers["session_store"] == "redis"
    assert ("redis-server" in readme) == sessions
    assert (f"`{answers['env_prefix']}REDIS_URL`" in readme) == sessions
    # `runs` is asked, and recorded, only with Redis sessions.
    runs = answers.get("runs", "none") == "redis"
    assert (f"uv run {answers['project_slug']} worker" in readme) == runs


def test_what_answers_the_callers_is_named_in_the_readme_and_agent_py(rendered: Rendered) -> None:
    readme = (rendered.path / "README.md").read_text()
    agent = (rendered.path / "src" / rendered.answers["package_name"] / "agent.py").read_text()
    docstring = agent.split('"""')[1]
    team = rendered.answers["agent_team"] != "single"
    assert ("(the team answers)" in readme) == team
    assert ("the team in team.py" in docstring) == team
    assert ("answers this service's callers" in docstring) == (not team)
