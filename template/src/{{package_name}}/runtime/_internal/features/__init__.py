"""The optional features this service was rendered with, one module (or package) each.

A feature module has two names:
- `Settings`, a `SettingsBase` subclass holding the feature's own settings;
- `install(app, settings)`, which adds the feature's routes, middleware and start-up
  work to the app that `http.app.create_app` is building.

A feature that was not chosen is not rendered at all; `project.FEATURES` names those
that were, in the order they are installed.
"""

from importlib import import_module
from types import ModuleType

from ..project import FEATURES
from ..settings import CoreSettings

INSTALLED: tuple[ModuleType, ...] = tuple(import_module(f"{__name__}.{name}") for name in FEATURES)


class RuntimeSettings(*(feature.Settings for feature in INSTALLED), CoreSettings):
    """Every setting of the runtime: the core's, then each installed feature's."""
