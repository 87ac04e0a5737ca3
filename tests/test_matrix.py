"""Every combination of the optional questions renders a project that lints, compiles and imports.

conftest.py's `rendered` takes a few renders in depth; this module goes wide instead: each
combination of the bool and multiple-choice questions of copier.yml is rendered once, and all
renders are checked together from one shared environment, so the whole matrix stays fast.
"""

import hashlib
import itertools
import math
import multiprocessing
import os
import re
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from copier.errors import DirtyLocalWarning
from rendering import TEMPLATE, render, text_of
from test_rendered_project import UNRENDERED

# Past this many combinations every pair of answers is covered instead of every combination.
MAX_RENDERS = 300
WORKERS = 2
# How copier words its refusal of an answer set (a question's validator, a disabled choice).
COPIER_REFUSAL = re.compile(r"^(Validation error for question|Invalid choice for) '")
# Render directories have names of one width, so no name is a prefix of another.
RENDER_NAME = re.compile(r"combination-\d{3}")

Answers = dict[str, Any]
Answer = tuple[str, Any]  # (question, answer)
Needs = dict[Answer, tuple[Answer, ...]]
# An answer that needs others: Copier refuses a set that has the first without them.
NEEDS: Needs = {
    ("runs", "redis"): (("session_store", "redis"),),
    ("kubernetes", True): (("docker", True),),
    ("budgets", True): (("auth", "api_key"), ("session_store", "redis")),
}


def optional_questions(copier_config: dict[str, Any]) -> dict[str, list[Any]]:
    """Each bool or multiple-choice question of copier.yml, with every answer it takes."""
    questions = {}
    for name, question in copier_config.items():
        if name.startswith("_") or not isinstance(question, dict):
            continue
        if question.get("type") == "bool":
            questions[name] = [True, False]
        elif "choices" in question:
            questions[name] = choice_values(question["choices"])
    return questions


def choice_values(choices: dict[str, Any] | list[Any]) -> list[Any]:
    # Copier takes {label: value}, [value, ...] or [[label, value], ...], and a value may be
    # {value: ..., validator: ...} when the choice can be disabled.
    if isinstance(choices, dict):
        values = list(choices.values())
    else:
        values = [choice[1] if isinstance(choice, list) else choice for choice in choices]
    return [value["value"] if isinstance(value, dict) else value for value in values]


def compatible(first: Answer, second: Answer, needs: Needs) -> bool:
    """Whether Copier accepts these two answers in one answer set."""
    for answer, (other, other_answer) in ((first, second), (second, first)):
        if any(
            question == other and needed != other_answer
            for question, needed in needs.get(answer, ())
        ):
            return False
    return True


def answer_sets(
    questions: dict[str, list[Any]],
    limit: int = MAX_RENDERS,
    needs: Needs = NEEDS,
) -> list[Answers]:
    """Every combination of answers that Copier accepts, or, when there are more than `limit`
    combinations, every pair of answers that it accepts."""
    if math.prod(len(answers) for answers in questions.values()) > limit:
        return all_pairs(questions, needs)
    combinations = [
        dict(zip(questions, values, strict=True))
        for values in itertools.product(*questions.values())
    ]
    return [
        answers
        for answers in combinations
        if all(
            compatible(first, second, needs)
            for first, second in itertools.combinations(answers.items(), 2)
        )
    ]


def _pair(question: int, answer: int, other: int, other_answer: int) -> tuple[int, int, int, int]:
    if question < other:
        return (question, answer, other, other_answer)
    return (other, other_answer, question, answer)


def _newly_covered(
    question: int, answer: int, chosen: dict[int, int], uncovered: set[tuple[int, int, int, int]]
) -> int:
    return sum(
        _pair(question, answer, other, other_answer) in uncovered
        for other, other_answer in chosen.items()
    )


def all_pairs(questions: dict[str, list[Any]], needs: Needs) -> list[Answers]:
    """Answer sets in which any two answers to two different questions that Copier accepts
    together appear together, and none that it refuses.

    Greedy, on indices so that the result never depends on hashing: each set starts from the
    smallest pair not yet covered, and every other question gets the answer that covers most
    uncovered pairs with the answers chosen so far (the first such answer on a tie), among the
    answers that go with them.
    """
    names = list(questions)
    sizes = [len(questions[name]) for name in names]

    def goes_with(question: int, answer: int, other: int, other_answer: int) -> bool:
        first = (names[question], questions[names[question]][answer])
        return compatible(first, (names[other], questions[names[other]][other_answer]), needs)

    uncovered = {
        (question, answer, other, other_answer)
        for question, other in itertools.combinations(range(len(names)), 2)
        for answer in range(sizes[question])
        for other_answer in range(sizes[other])
        if goes_with(question, answer, other, other_answer)
    }
    sets = []
    while uncovered:
        question, answer, other, other_answer = min(uncovered)
        chosen = {question: answer, other: other_answer}
        for next_question in range(len(names)):
            if next_question not in chosen:
                candidates = [
                    candidate
                    for candidate in range(sizes[next_question])
                    if all(goes_with(next_question, candidate, *pick) for pick in chosen.items())
                ]
                assert candidates, f"no answer to {names[next_question]} goes with {chosen}"
                gains = [
                    _newly_covered(next_question, candidate, chosen, uncovered)
                    for candidate in candidates
                ]
                chosen[next_question] = candidates[gains.index(max(gains))]
        uncovered -= {
            _pair(first, chosen[first], second, chosen[second])
            for first, second in itertools.combinations(chosen, 2)
        }
        sets.append(
            {names[index]: questions[names[index]][chosen[index]] for index in sorted(chosen)}
        )
    return sets


# A fake question set as large as the template may grow: 12,288 combinations.
FUTURE_QUESTIONS = {
    **{name: [True, False] for name in ("streaming", "docker", "openai_api", "a2a", "playground")},
    "session_store": ["none", "redis"],
    "auth": ["api_key", "none"],
    "observability": ["otel", "none"],
    "ci": ["github", "none"],
    "kubernetes": [True, False],
    "agent_team": ["single", "round_robin", "selector", "swarm"],
    "engine": ["autogen", "agent_framework", "a_third"],
    "runs": ["none", "memory", "redis"],
}


def test_optional_questions_are_read_from_copier_yml() -> None:
    questions = optional_questions(yaml.safe_load((TEMPLATE / "copier.yml").read_text()))
    assert questions["streaming"] == [True, False]
    assert questions["session_store"] == ["none", "redis"]
    assert "project_name" not in questions


def test_choices_in_every_form_copier_takes() -> None:
    labelled = {"a label": "a", "b label": {"value": "b", "validator": "{{ 'disabled' }}"}}
    assert choice_values(labelled) == ["a", "b"]
    assert choice_values(["a", ["b label", "b"]]) == ["a", "b"]


@pytest.mark.parametrize(
    "answers",
    [
        {"auth": "oauth"},
        {"python_version": "3.10"},
    ],
)
def test_copier_refusals_are_recognised(tmp_path: Path, answers: Answers) -> None:
    with pytest.raises(ValueError) as refusal:
        render(tmp_path / "out", answers, pretend=True, skip_tasks=True)
    assert COPIER_REFUSAL.match(str(refusal.value))


def test_few_questions_get_every_combination() -> None:
    questions = {"streaming": [True, False], "agent_team": ["single", "selector", "swarm"]}
    sets = answer_sets(questions)
    assert len(sets) == 6
    assert {tuple(answers.values()) for answers in sets} == set(
        itertools.product(*questions.values())
    )


def accepted_pairs(questions: dict[str, list[Any]]) -> set[tuple[Answer, Answer]]:
    return {
        ((first, answer), (second, other_answer))
        for first, second in itertools.combinations(questions, 2)
        for answer in questions[first]
        for other_answer in questions[second]
        if compatible((first, answer), (second, other_answer), NEEDS)
    }


def covered_pairs(sets: list[Answers]) -> set[tuple[Answer, Answer]]:
    return {pair for answers in sets for pair in itertools.combinations(answers.items(), 2)}


def test_many_questions_get_every_pair_of_answers_copier_accepts() -> None:
    assert math.prod(len(answers) for answers in FUTURE_QUESTIONS.values()) > MAX_RENDERS
    sets = answer_sets(FUTURE_QUESTIONS)
    assert sets == answer_sets(FUTURE_QUESTIONS)  # deterministic
    assert all(list(answers) == list(FUTURE_QUESTIONS) for answers in sets)
    assert covered_pairs(sets) == accepted_pairs(FUTURE_QUESTIONS)
    # agent_team x runs alone needs 12 sets; greedy may use a few more, never hundreds.
    assert len(sets) <= 20


def test_the_matrix_takes_every_pair_of_answers_copier_accepts() -> None:
    questions = optional_questions(yaml.safe_load((TEMPLATE / "copier.yml").read_text()))
    assert questions["engine"] == ["autogen", "agent_framework"]
    sets = answer_sets(questions)
    # A set that breaks a need would be refused, and the other pairs it holds lost.
    assert covered_pairs(sets) == accepted_pairs(questions)


@dataclass(frozen=True, eq=False)  # each render is itself, whatever its answers
class Combination:
    answers: Answers  # the matrix's answers; every other question has its default
    path: Path
    package_name: str
    env_prefix: str
    source_digest: str  # of src/: renders with equal digests import the same code

    @property
    def label(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.answers.items())


@dataclass
class Matrix:
    root: Path
    renders: list[Combination] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # copier's refusals, with their answers
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started

    def summary(self) -> str:
        distinct = len({combination.source_digest for combination in self.renders})
        phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.seconds.items())
        return (
            f"matrix: {len(self.renders)} renders ({len(self.refused)} refused by copier), "
            f"{distinct} distinct src/ trees; seconds: {phases}"
        )


def source_digest(render_path: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((render_path / "src").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(render_path)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    questions = optional_questions(yaml.safe_load((TEMPLATE / "copier.yml").read_text()))
    built = Matrix(tmp_path_factory.mktemp("matrix"))
    # A render is CPU-bound (copier compiles every Jinja template anew), so a second process
    # nearly halves the wall time. Spawned workers do not inherit pytest's warning filters, and
    # every render of the working tree warns that it includes uncommitted changes.
    with (
        built.phase("render"),
        ProcessPoolExecutor(
            WORKERS,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=warnings.filterwarnings,
            initargs=("ignore", "", DirtyLocalWarning),
        ) as pool,
    ):
        jobs = []
        for index, answers in enumerate(answer_sets(questions)):
            path = built.root / f"combination-{index:03d}"
            jobs.append((answers, path, pool.submit(render, path, answers, skip_tasks=True)))
        for answers, path, job in jobs:
            try:
                job.result()
            except ValueError as refusal:
                if not COPIER_REFUSAL.match(str(refusal)):
                    raise
                label = " ".join(f"{name}={value}" for name, value in answers.items())
                built.refused.append(f"{label}\n  {refusal}")
                continue
            recorded = yaml.safe_load((path / ".copier-answers.yml").read_text())
            built.renders.append(
                Combination(
                    answers,
                    path,
                    recorded["package_name"],
                    recorded["env_prefix"],
                    source_digest(path),
                )
            )
    yield built
    print(f"\n{built.summary()}")  # a figure to read with -s, not a timed assertion


@pytest.fixture(scope="module")
def tools(matrix: Matrix, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of one environment holding every render's dependencies and ruff."""
    with matrix.phase("environment"):
        requirements = {"ruff"}
        for combination in matrix.renders:
            pyproject = tomllib.loads((combination.path / "pyproject.toml").read_text())
            requirements.update(pyproject["project"]["dependencies"])
        venv = tmp_path_factory.mktemp("matrix-environment") / "venv"
        python = venv / "bin" / "python"
        uv_env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        uv_env.pop("VIRTUAL_ENV", None)  # the template's own environment must not be the target
        for command in (
            ["uv", "venv", "--quiet", "--python", sys.executable, str(venv)],
            ["uv", "pip", "install", "--quiet", "--python", str(python), *sorted(requirements)],
        ):
            result = run(command, cwd=venv.parent, env=uv_env)
            if result.returncode != 0:
                pytest.fail(f"`{' '.join(command)}` failed:\n{result.stdout}\n{result.stderr}")
    return venv / "bin"


@pytest.fixture(scope="module")
def python_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # Byte code goes to one directory outside the renders, so they keep exactly the files copier
    # wrote; it is written even where the caller turned that off, because an import that finds
    # the dependencies compiled takes half the time of one that compiles them.
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path_factory.mktemp("pycache"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run(
    command: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def split_by_render(
    output: str, renders: list[Combination], *, continued: bool
) -> tuple[dict[Combination, str], str]:
    """A tool's output over many renders, cut into each render's part and the rest.

    With `continued`, a line that names no render (a traceback, a diff) belongs to the last render
    named before it; without, it belongs to none (a summary line).
    """
    by_name = {combination.path.name: combination for combination in renders}
    lines: dict[Combination | None, list[str]] = {}
    current = None
    for line in output.splitlines():
        if named := RENDER_NAME.search(line):
            current = by_name[named.group()]
        elif not continued:
            current = None
        lines.setdefault(current, []).append(line)
    unattributed = "\n".join(lines.pop(None, []))
    return {combination: "\n".join(part) for combination, part in lines.items()}, unattributed


def fail_naming_combinations(
    what: str, failures: dict[Combination, str], total: int, unattributed: str = ""
) -> None:
    """Fail with each distinct output once, under the combinations that produced it."""
    combinations_by_output: dict[str, list[str]] = {}
    for combination, output in failures.items():
        normalized = RENDER_NAME.sub("<render>", output)
        combinations_by_output.setdefault(normalized, []).append(combination.label)
    lines = [f"{what}: fails in {len(failures)} of {total} renders"]
    for output, labels in combinations_by_output.items():
        lines += [f"== {label}" for label in labels] + [output, ""]
    if unattributed:
        lines += ["== output naming no render", unattributed]
    pytest.fail("\n".join(lines), pytrace=False)


def check_all_at_once(what: str, result: subprocess.CompletedProcess[str], matrix: Matrix) -> None:
    if result.returncode == 0:
        return
    # Tracebacks and diffs go to stdout, one-line errors and summaries to stderr.
    failures, unattributed = split_by_render(result.stdout, matrix.renders, continued=True)
    failures_in_stderr, unattributed_in_stderr = split_by_render(
        result.stderr, matrix.renders, continued=False
    )
    for combination, output in failures_in_stderr.items():
        failures[combination] = f"{failures.get(combination, '')}\n{output}".strip()
    unattributed = f"{unattributed}\n{unattributed_in_stderr}".strip()
    fail_naming_combinations(what, failures, len(matrix.renders), unattributed)


def render_dirs(matrix: Matrix) -> list[str]:
    # Relative, so every line of output names its render directory and nothing longer.
    return [combination.path.name for combination in matrix.renders]


def test_copier_accepts_every_answer_set_of_the_matrix(matrix: Matrix) -> None:
    # A refused set loses every pair it was to render: NEEDS must know each question's needs.
    assert not matrix.refused, "add these needs to NEEDS:\n" + "\n".join(matrix.refused)


def test_tool_output_is_split_by_the_render_it_names(tmp_path: Path) -> None:
    first, second = (
        Combination({"auth": auth}, tmp_path / f"combination-00{index}", "desk", "DESK_", "")
        for index, auth in enumerate(("api_key", "none"))
    )
    diff = "--- combination-001/a.py\n+++ combination-001/a.py\n-x  =  1\n+x = 1"
    assert split_by_render(diff, [first, second], continued=True) == ({second: diff}, "")
    stderr = "error: Failed to parse combination-000/b.py\n1 file would be reformatted"
    assert split_by_render(stderr, [first, second], continued=False) == (
        {first: "error: Failed to parse combination-000/b.py"},
        "1 file would be reformatted",
    )


def test_no_template_syntax_is_left(matrix: Matrix) -> None:
    with matrix.phase("jinja leftovers"):
        failures = {}
        for combination in matrix.renders:
            leftovers = [
                str(path.relative_to(combination.path))
                for path in sorted(combination.path.rglob("*"))
                if path.is_file()
                and (
                    path.suffix == ".jinja"
                    or UNRENDERED.search(str(path.relative_to(combination.path)))
                    or UNRENDERED.search(text_of(path))
                )
            ]
            if leftovers:
                failures[combination] = "\n".join(leftovers)
    if failures:
        fail_naming_combinations("Jinja syntax left", failures, len(matrix.renders))


def test_every_render_compiles(matrix: Matrix, tools: Path, python_env: dict[str, str]) -> None:
    command = [str(tools / "python"), "-m", "compileall", "-q", *render_dirs(matrix)]
    with matrix.phase("compileall"):
        result = run(command, cwd=matrix.root, env=python_env)
    check_all_at_once("python -m compileall -q", result, matrix)


def test_every_distinct_source_imports_its_app(
    matrix: Matrix, tools: Path, python_env: dict[str, str], tmp_path: Path
) -> None:
    renders_by_source: dict[str, list[Combination]] = {}
    for combination in matrix.renders:
        renders_by_source.setdefault(combination.source_digest, []).append(combination)

    def import_app(combination: Combination) -> subprocess.CompletedProcess[str]:
        env = {
            **python_env,
            "PYTHONPATH": str(combination.path / "src"),
            # With auth=api_key the app refuses to be built without keys in production.
            f"{combination.env_prefix}ENVIRONMENT": "development",
        }
        # An empty working directory, so no .env file feeds the settings.
        command = [str(tools / "python"), "-c", f"import {combination.package_name}.main"]
        return run(command, cwd=tmp_path, env=env)

    with matrix.phase("import"), ThreadPoolExecutor(WORKERS) as pool:
        representatives = [same_source[0] for same_source in renders_by_source.values()]
        results = dict(zip(representatives, pool.map(import_app, representatives), strict=True))
    failures = {
        combination: f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}".strip()
        for representative, result in results.items()
        if result.returncode != 0
        for combination in renders_by_source[representative.source_digest]
    }
    if failures:
        fail_naming_combinations("import smoke test", failures, len(matrix.renders))


def test_ruff_check_passes(matrix: Matrix, tools: Path) -> None:
    # One run over every render: ruff reads each file's nearest pyproject.toml, the render's own.
    command = [str(tools / "ruff"), "check", "--quiet", "--output-format", "concise"]
    with matrix.phase("ruff check"):
        result = run(command + render_dirs(matrix), cwd=matrix.root)
    check_all_at_once("ruff check", result, matrix)


def test_ruff_format_check_passes(matrix: Matrix, tools: Path) -> None:
    command = [str(tools / "ruff"), "format", "--check", "--diff"]
    with matrix.phase("ruff format"):
        result = run(command + render_dirs(matrix), cwd=matrix.root)
    check_all_at_once("ruff format --check", result, matrix)
