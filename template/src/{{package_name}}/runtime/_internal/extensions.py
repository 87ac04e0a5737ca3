"""What optional features plug into while the app is built.

Each feature's `install(app, settings)` adds what it needs to the app's `Extensions`;
the app factory reads them once every feature is installed.
"""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from fastapi import FastAPI

from .agent.instrumentation import Instrumentation
from .agent.upstream import CallGuard
from .http.middleware import RequestObserver

# Work around the service's life: entered in order at start-up, left in reverse at shutdown.
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


@dataclass
class Extensions:
    instrumentation: Instrumentation = field(default_factory=Instrumentation)
    request_observer: RequestObserver | None = None
    lifespans: list[Lifespan] = field(default_factory=list)
    # What `/readyz` adds to its answer, by name: a feature's view of its own dependencies,
    # given or awaited; one that raises `NotReady` makes `/readyz` answer 503.
    readiness: dict[str, Callable[[], object]] = field(default_factory=dict)
    # Paths that hold nothing private (a page, a public description of the service), which
    # callers may fetch without an API key.
    public_paths: set[str] = field(default_factory=set)
    # Sees every model call of every engine before it is sent and once it ended (budgets).
    call_guard: CallGuard | None = None


class NotReady(Exception):
    """A dependency the service cannot answer without is missing; the message says which."""


def extensions(app: FastAPI) -> Extensions:
    """The extension points of an app that `create_app` is building."""
    found: Extensions | None = getattr(app.state, "extensions", None)
    if found is None:
        found = app.state.extensions = Extensions()
    return found
