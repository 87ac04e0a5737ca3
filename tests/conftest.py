"""Each answer set is rendered once per test session."""

from collections.abc import Callable

import pytest
import yaml
from rendering import VARIANTS, Rendered, render, require_python


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
