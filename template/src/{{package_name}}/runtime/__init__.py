"""The service runtime, owned by the template: what the team's code imports.

`copier update` keeps this package in step with the template, so fixes arrive without
merge work. Change the service through `settings.py`, `agent.py` (and `team.py` in a
team service) and `tools.py` next to this package, importing from here only; the modules
in `_internal` may change at any update.
"""

from ._internal.agent.specs import USER, AgentSpec, TeamKind, TeamSpec
from ._internal.agent.tools import ToolError, tool
from ._internal.features import RuntimeSettings
from ._internal.http.app import create_app
from ._internal.ops.testing import ThreadedServer, call_tool, chat_body, serve
from ._internal.project import ENV_PREFIX
from ._internal.settings import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "USER",
    "AgentSpec",
    "ConfigurationError",
    "RuntimeSettings",
    "TeamKind",
    "TeamSpec",
    "ThreadedServer",
    "ToolError",
    "call_tool",
    "chat_body",
    "create_app",
    "serve",
    "tool",
]
