"""The rendered service's Python sources stay readable in every variant: an optional feature
is a whole file switched in or out by its name, never a Jinja block inside shared code."""

import ast
import importlib.util
import re
from pathlib import Path

import yaml
from rendering import TEMPLATE

SOURCES = TEMPLATE / "template" / "src" / "{{package_name}}"
RUNTIME = SOURCES / "runtime"
# The one module whose job is to hold the answers the runtime reads.
ANSWERS_MODULE = RUNTIME / "_internal" / "project.py.jinja"
JINJA = re.compile(r"{{|{%")
JINJA_STATEMENT = re.compile(r"{%-?\s*(\w+)")


def python_sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and ".py" in p.name)


def test_no_runtime_module_but_the_answers_holds_jinja() -> None:
    templated = [
        str(path.relative_to(RUNTIME))
        for path in python_sources(RUNTIME)
        if path != ANSWERS_MODULE and (path.suffix == ".jinja" or JINJA.search(path.read_text()))
    ]
    assert templated == []


def test_no_python_source_branches_on_an_answer() -> None:
    statements = {
        str(path.relative_to(SOURCES)): JINJA_STATEMENT.findall(path.read_text())
        for path in python_sources(SOURCES)
    }
    assert {path: found for path, found in statements.items() if found} == {
        str(ANSWERS_MODULE.relative_to(SOURCES)): ["set", "for", "endfor"]
    }


def test_every_feature_module_plugs_in_the_same_way() -> None:
    installed_features = yaml.safe_load((TEMPLATE / "copier.yml").read_text())[
        "installed_features"
    ]["default"]
    features = RUNTIME / "_internal" / "features"
    modules = [p for p in features.iterdir() if p.name != "__init__.py" and "__" not in p.name]
    assert modules
    for module in modules:
        source = module / "__init__.py" if module.is_dir() else module
        text = source.read_text()
        # On the core's settings when they depend on one (`environment`), else on the base.
        settings_class = r"^class Settings\((SettingsBase|CoreSettings)\):"
        assert re.search(settings_class, text, re.M), module.name
        assert re.search(r"^def install\(app: FastAPI, settings: Settings\) -> None:", text, re.M)
        assert re.match(r"{% if \w+ ", module.name), f"{module.name}: not switched by its name"
        feature = re.sub(r"{%.*?%}", "", module.name).removesuffix(".py")
        assert f"'{feature}'" in installed_features, f"{feature} is missing from copier.yml"


def test_every_engine_is_a_whole_package_switched_in_by_its_answer() -> None:
    engine = yaml.safe_load((TEMPLATE / "copier.yml").read_text())["engine"]
    engines = RUNTIME / "_internal" / "agent" / "engines"
    packages = {p.name: p for p in engines.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert sorted(packages) == sorted(
        f"{{% if engine == '{name}' %}}{name}{{% endif %}}" for name in engine["choices"].values()
    )
    for package in packages.values():
        # What the loader (agent/engine.py) takes from the one engine a service has.
        tree = ast.parse((package / "__init__.py").read_text())
        [exported] = [
            node.value
            for node in tree.body
            if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__all__"]
        ]
        assert sorted(ast.literal_eval(exported)) == ["Engine", "FEATURES"], package.name


def test_the_import_migration_knows_every_public_name() -> None:
    # A name missing from the migration's list would be pointed at `_internal` instead.
    tree = ast.parse((RUNTIME / "__init__.py").read_text())
    [exported] = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__all__"]
    ]
    spec = importlib.util.spec_from_file_location(
        "runtime_public_api", TEMPLATE / "hooks" / "migrations" / "runtime_public_api.py"
    )
    assert spec and spec.loader
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert set(ast.literal_eval(exported)) == migration.PUBLIC
