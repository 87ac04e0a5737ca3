"""Each answer set is rendered once per test process.

`pytest-xdist` runs the suite in as many processes as there are cores (`-n auto`, in
pyproject.toml): the rendered services' own suites are most of the time, and a good part of
each is waiting (on servers starting, on deadlines). So that nothing is rendered twice, the
tests of one answer set, and those of one module with module-wide fixtures, form a group
that one process runs (`--dist loadgroup`).
"""

from collections.abc import Callable

import pytest
import yaml
from rendering import VARIANTS, Rendered, render, require_python

# Modules whose fixtures render or update whole services once for all their tests.
GROUPED_MODULES = ("test_matrix", "test_update", "test_engine_switch", "test_bench")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if group := _group_of(item):
            item.add_marker(pytest.mark.xdist_group(group))


def _group_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "rendered" in callspec.params:
        return str(callspec.params["rendered"])
    if "defaults_render" in getattr(item, "fixturenames", ()):
        return "defaults"
    module = item.module.__name__ if isinstance(item, pytest.Function) else ""
    return module if module in GROUPED_MODULES else None


@pytest.fixture(scope="session")
def render_variant(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Rendered]:
    """The render of an answer set by name, made at its first use and shared from then on."""
    made: dict[str, Rendered] = {}

    def rendered_once(name: str) -> Rendered:
        if name not in made:
            require_python(VARIANTS[name].get("python_version", "3.11"), f"run the {name} render")
            path = render(tmp_path_factory.mktemp(name) / "service", VARIANTS[name])
            answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
            made[name] = Rendered(name, path, answers)
        return made[name]

    return rendered_once


@pytest.fixture(scope="session", params=list(VARIANTS))
def rendered(request: pytest.FixtureRequest, render_variant: Callable[[str], Rendered]) -> Rendered:
    return render_variant(request.param)


@pytest.fixture(scope="session")
def defaults_render(render_variant: Callable[[str], Rendered]) -> Rendered:
    """The service rendered with the default answers, which the template's README shows."""
    return render_variant("defaults")
