"""A turn as the service sees it, whatever engine runs it: what it starts from, the events
it yields, how it ends, and what every model call of it adds up to."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import openai

from ..contract import Approval, ChatMessage, StopReason
from .conversation import Awaiting, PendingCall, SavedState


@dataclass(frozen=True)
class TextDelta:
    """A piece of an agent's text, as it streams in."""

    text: str
    source: str


@dataclass(frozen=True)
class ToolCallStarted:
    name: str
    arguments: str  # as the model wrote them: may be invalid JSON, may hold personal data
    source: str
    call_id: str


@dataclass(frozen=True)
class ToolCallFinished:
    name: str
    is_error: bool
    source: str
    call_id: str
    content: str  # the tool's answer, as the model is sent it: may hold personal data


InnerMessageType = Literal["text", "tool_call", "tool_result", "handoff"]


@dataclass(frozen=True)
class InnerMessage:
    """One message of a turn, as the response lists it."""

    source: str
    type: InnerMessageType
    content: str
    name: str | None = None  # the tool's, or the handoff's target
    call_id: str | None = None
    is_error: bool | None = None


@dataclass(frozen=True)
class TurnResult:
    """The turn's end: always the last event of a run."""

    reply: str
    stop_reason: StopReason
    messages: tuple[InnerMessage, ...]
    pending: tuple[PendingCall, ...]
    prompt_tokens: int
    completion_tokens: int
    tool_calls: int
    # What the session keeps for the next turn; None when the transcript is enough.
    state: SavedState | None


TurnEvent = TextDelta | ToolCallStarted | ToolCallFinished | TurnResult


@dataclass(frozen=True)
class FrontendTool:
    """A tool of the client's page (AG-UI's frontend tools): offered to the model for one
    turn beside the service's own. A call of it ends the turn; the page runs it, and the next
    turn carries its result (`FrontendResult`)."""

    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema of the arguments, as the client sent it


class FrontendResult(Approval):
    """A frontend tool's call, answered by the client that ran it: settled as an approved
    call of a tool that needs approval is, with the client's result in place of a run."""

    decision: Literal["approve"] = "approve"
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class TurnInput:
    """What a turn starts from."""

    history: Sequence[ChatMessage]  # earlier messages, used when no saved state holds them
    newest: str | None  # the user's new message; None when the turn decides approvals
    # What the previous turn left, when this engine saved it (another engine's is not read).
    state: SavedState | None
    awaiting: Awaiting | None  # what that state waits for (`Engine.awaiting`)
    keep_state: bool  # whether the conversation keeps what the turn leaves (a session)
    approvals: Sequence[Approval] = ()  # `FrontendResult`s among them
    frontend_tools: Sequence[FrontendTool] = ()
    context: str = ""  # what the client tells the agents besides, below their instructions


@dataclass(frozen=True)
class FrontendInput:
    """What an AG-UI client adds to a turn besides its messages."""

    tools: Sequence[FrontendTool] = ()
    results: Sequence[FrontendResult] = ()  # of the calls the turn before left to the client
    # Without sessions, the client's messages hold what the turn before left it: its calls of
    # frontend tools, and the agent that made them (None: the lone agent, or the first).
    held_calls: Sequence[PendingCall] = ()
    held_by: str | None = None
    context: str = ""


def with_context(instructions: str, context: str) -> str:
    """An agent's instructions for a turn whose client sent context."""
    if not context:
        return instructions
    return f"{instructions}\n\nContext from the user's application:\n{context}"


@dataclass(frozen=True)
class TurnLimits:
    """What ends a turn before its reply, from the settings."""

    max_tool_iterations: int
    team_max_messages: int
    team_token_budget: int
    team_turn_seconds: float


class StateRefused(Exception):
    """A session's saved state that this service cannot go on from."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.type = type


class ModelCallRefused(openai.OpenAIError):
    """A model call that the service refused itself, before sending it (a feature's
    `CallGuard`: budgets), answered with its own status and error type. An
    `openai.OpenAIError`, so that the SDK passes it on as it is, never retried, and every
    engine reports it as the model call's failure."""

    def __init__(
        self, status: int, type: str, message: str, retry_after_seconds: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.retry_after_seconds = retry_after_seconds


# The refusals of a call that the caller's token budget (429, until the window resets) or
# the turn's own cap (422: waiting would not help) cannot pay for. A team's turn that has
# begun ends with `stop_reason: budget_exhausted` instead.
BUDGET_EXHAUSTED = "budget_exhausted"
TURN_BUDGET_EXCEEDED = "turn_budget_exceeded"
BUDGET_REFUSALS = frozenset({BUDGET_EXHAUSTED, TURN_BUDGET_EXCEEDED})


class UnusableAnswer(Exception):
    """The model answered, but not with anything the engine can use (no choices, a body
    that is no completion): 502 `upstream_bad_answer`."""


@dataclass
class TurnUsage:
    """What every model call of one turn adds up to, a team's speaker selection included."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_failure: BaseException | None = None  # the last model call's, kept for the turn


# Set by each run for the model calls made under it, a team runtime's tasks included.
current_usage: ContextVar[TurnUsage | None] = ContextVar("turn_usage", default=None)


def count_model_usage(prompt_tokens: int, completion_tokens: int) -> None:
    """Adds a model call's tokens to its turn's usage."""
    if (usage := current_usage.get()) is not None:
        usage.prompt_tokens += prompt_tokens
        usage.completion_tokens += completion_tokens


@contextmanager
def noting_model_failure() -> Iterator[None]:
    """Keeps a model call's failure for its turn: the framework may pass it on wrapped, or,
    in a team, as a bare RuntimeError."""
    try:
        yield
    except Exception as error:
        if (usage := current_usage.get()) is not None:
            usage.model_failure = error
        raise
