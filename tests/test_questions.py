"""Every question's validator rejects a bad value with a message and accepts a good one; an
answer changes only what it should."""

import os
from collections.abc import Callable
from pathlib import Path

import pathspec
import pytest
import yaml
from rendering import TEMPLATE, VARIANTS, Rendered, render

CASES = [
    ("project_name", "Support Desk", ""),
    ("project_name", "Claims-Bot 2.0", "9 lives"),
    ("project_slug", "support-desk", "Support_Desk"),
    ("project_slug", "desk2", "desk--bot"),
    ("package_name", "support_desk", "Support-Desk"),
    ("package_name", "desk_2", "class"),
    ("package_name", "desk_agents", "openai"),
    ("description", "Answers support questions", "two\nlines"),
    ("description", 'Ünïcode — and "quotes"', "   "),
    ("author_name", "Zoë O'Brien", ""),
    ("author_email", "team@example.com", "team.example.com"),
    ("author_email", "a.b+c@sub.example.org", "two@at@example.com"),
    ("python_version", "3.11", "3.10"),
    ("python_version", "3.13", "3"),
    ("env_prefix", "SUPPORT_DESK_", "SUPPORT_DESK"),
    ("env_prefix", "X1_", "support_"),
    ("default_model", "gpt-4o-mini", "gpt 4o"),
    ("default_model", "meta-llama/Llama-3.1-8B:q4", ""),
]


def try_answer(tmp_path: Path, question: str, value: str) -> None:
    render(tmp_path / "out", {question: value}, pretend=True, skip_tasks=True)


@pytest.mark.parametrize(("question", "good", "bad"), CASES)
def test_validator(tmp_path: Path, question: str, good: str, bad: str) -> None:
    try_answer(tmp_path, question, good)
    expected = f"Validation error for question '{question}': .+"
    with pytest.raises(ValueError, match=expected) as raised:
        try_answer(tmp_path, question, bad)
    message = str(raised.value).split(": ", 1)[1].strip()
    assert len(message) > 20  # a message that says what is allowed


def test_defaults_are_derived_from_the_project_name(tmp_path: Path) -> None:
    destination = render(tmp_path / "out", {"project_name": "Billing Help Desk"}, skip_tasks=True)
    answers = yaml.safe_load((destination / ".copier-answers.yml").read_text())
    assert answers["project_slug"] == "billing-help-desk"
    assert answers["package_name"] == "billing_help_desk"
    assert answers["env_prefix"] == "BILLING_HELP_DESK_"


def recorded_answers(tmp_path: Path, answers: dict[str, str]) -> dict[str, object]:
    destination = render(tmp_path / "out", answers, skip_tasks=True)
    return yaml.safe_load((destination / ".copier-answers.yml").read_text())


def test_runs_is_asked_only_when_sessions_are_in_redis(tmp_path: Path) -> None:
    # Unasked, `runs` takes its default (none), which validates, and is not recorded, so that
    # an update that turns sessions on asks it.
    assert "runs" not in recorded_answers(tmp_path / "stateless", {"session_store": "none"})
    with_sessions = recorded_answers(tmp_path / "sessions", {"session_store": "redis"})
    assert with_sessions["runs"] == "none"


def test_runs_given_without_redis_sessions_is_refused(tmp_path: Path) -> None:
    expected = "Validation error for question 'runs': .*answer session_store=redis too"
    with pytest.raises(ValueError, match=expected):
        render(tmp_path / "out", {"runs": "redis"}, pretend=True, skip_tasks=True)


def test_every_team_renders_on_agent_framework(tmp_path: Path) -> None:
    for kind in ("single", "round_robin", "selector", "swarm"):
        answers = {"engine": "agent_framework", "agent_team": kind}
        render(tmp_path / kind, answers, pretend=True, skip_tasks=True)


def team_files(project: Path) -> dict[str, bytes]:
    """The files of `project` that `_skip_if_exists` in copier.yml gives the team, by path."""
    patterns = yaml.safe_load((TEMPLATE / "copier.yml").read_text())["_skip_if_exists"]
    spec = pathspec.PathSpec.from_lines("gitignore", patterns)
    files = {}
    for directory, subdirectories, names in os.walk(project):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for path in (Path(directory, name) for name in names):
            name = path.relative_to(project).as_posix()
            # Recordings of model calls are the engine's: their request bodies differ.
            if spec.match_file(name) and not name.startswith("evals/cassettes/"):
                files[name] = path.read_bytes()
    return files


@pytest.mark.xdist_group("agent_framework")  # its render, made once in that group's process
def test_the_teams_files_are_the_same_on_either_engine(
    tmp_path: Path, render_variant: Callable[[str], Rendered]
) -> None:
    on_agent_framework = render_variant("agent_framework")
    answers = {**VARIANTS["agent_framework"], "engine": "autogen"}
    on_autogen = render(tmp_path / "autogen", answers, skip_tasks=True)
    package_name = on_agent_framework.answers["package_name"]

    files = team_files(on_agent_framework.path)
    assert {f"src/{package_name}/agent.py", "tests/test_evals.py", "evals/support.jsonl"} <= set(
        files
    )
    assert team_files(on_autogen) == files


def test_no_question_shows_a_first_time_user_how_to_update() -> None:
    # What an update of an older service asks is in the rendered docs/updating.md instead.
    questions = yaml.safe_load((TEMPLATE / "copier.yml").read_text())
    helps = {name: q.get("help", "") for name, q in questions.items() if isinstance(q, dict)}
    assert [name for name, help_text in helps.items() if "updat" in help_text.lower()] == []
    updating = (TEMPLATE / "template" / "docs" / "updating.md").read_text()
    assert "## Updating a service made before the `auth` question" in updating
