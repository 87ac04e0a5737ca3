"""Where telemetry hooks into a turn. Every hook does nothing unless a feature sets it.

The agent layer calls these at the points only it can see (a model call, a tool call,
a history trim); what is recorded, and where, is the business of the feature that
installs them (`features/observability`), so the agent layer imports no telemetry.
"""

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol


class ModelCallRecord(Protocol):
    def answered(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: str,
        tool_names: Sequence[str],
    ) -> None: ...


class _Unrecorded:
    def answered(self, **_: object) -> None:
        pass


@contextmanager
def _unobserved_model_call(_: str) -> Iterator[ModelCallRecord]:
    yield _Unrecorded()


def _ignore(*_: object) -> None:
    pass


@dataclass(frozen=True)
class Instrumentation:
    # Around each model call (retries included), given the model's name.
    model_call: Callable[[str], AbstractContextManager[ModelCallRecord]] = _unobserved_model_call
    # An httpx request hook, called for every attempt the openai SDK makes.
    upstream_attempt: Callable[[Any], Awaitable[None]] | None = None
    # A tool call's end: the tool's name and its outcome (`ok` or the error type).
    tool_call: Callable[[str, str], None] = _ignore
    # A model call's history was cut to fit the token budget.
    history_trimmed: Callable[[], None] = _ignore
    # Around each agent run, until it really ends (abandoned runs included).
    agent_run: Callable[[], AbstractContextManager[object]] = nullcontext
    # A model call that a token budget refused (features/budgets).
    budget_refused: Callable[[], None] = _ignore
