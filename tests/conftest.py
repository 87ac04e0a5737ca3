"""Each answer set is rendered once per test session."""

import pytest
import yaml
from rendering import VARIANTS, Rendered, render, require_python


@pytest.fixture(scope="session", params=list(VARIANTS))
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    python_version = VARIANTS[request.param].get("python_version", "3.11")
    require_python(python_version, f"run the {request.param} render")
    path = render(tmp_path_factory.mktemp(request.param) / "service", VARIANTS[request.param])
    answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
    return Rendered(request.param, path, answers)
