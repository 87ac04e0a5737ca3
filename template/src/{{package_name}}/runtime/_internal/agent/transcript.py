"""A turn's story as the engine tells it (tool calls, their results, texts, handoffs), what
it ends with (the reply, the stop reason, what it waits for), and when a team's turn must
end before its reply. The engine translates its framework's messages into these calls."""

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..contract import StopReason
from .approvals import AWAITING_APPROVAL, AWAITING_FRONTEND
from .conversation import Awaiting, PendingCall, SavedState
from .lineup import Lineup
from .specs import USER
from .tools import is_tool_error
from .turn import (
    BUDGET_EXHAUSTED,
    BUDGET_REFUSALS,
    InnerMessage,
    ModelCallRefused,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    TurnEvent,
    TurnLimits,
    TurnResult,
    TurnUsage,
)


@dataclass(frozen=True)
class Call:
    """A tool call the model asked for."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class CallResult:
    call_id: str
    name: str
    content: str
    is_error: bool  # as the framework flagged it: our tools answer errors as JSON besides


class Transcript:
    """The turn's messages as they come, and what its end is read from."""

    def __init__(
        self,
        max_tool_iterations: int,
        handoff_tools: frozenset[str],
        settled: list[InnerMessage],
        tool_calls: int,
    ) -> None:
        self._max_rounds = max_tool_iterations
        # Tools that only hand over (to an agent, to the user): the handoff tells the story.
        self._handoff_tools = handoff_tools
        self.messages = settled
        self.tool_calls = tool_calls
        self.last_chat: InnerMessage | None = None  # the last text or handoff
        self.last_calls: dict[str, list[Call]] = {}
        self.reply = ""
        self.reply_reason: StopReason = "reply"
        self._rounds: dict[str, int] = {}
        self._frontend_calls: set[str] = set()  # the calls that the client's page runs

    def text_delta(self, source: str, text: str) -> list[TurnEvent]:
        return [TextDelta(text, source)]

    def calls_requested(self, source: str, calls: Sequence[Call]) -> list[TurnEvent]:
        self.last_calls[source] = list(calls)
        self._rounds[source] = self._rounds.get(source, 0) + 1
        shown = [call for call in calls if call.name not in self._handoff_tools]
        self.tool_calls += len(shown)
        for call in shown:
            self.messages.append(
                InnerMessage(source, "tool_call", call.arguments, call.name, call.id)
            )
        return [ToolCallStarted(call.name, call.arguments, source, call.id) for call in shown]

    def calls_answered(self, source: str, results: Sequence[CallResult]) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        for result in results:
            if result.content == AWAITING_FRONTEND:
                self._frontend_calls.add(result.call_id)
            if result.name in self._handoff_tools or result.content in (
                AWAITING_APPROVAL,
                AWAITING_FRONTEND,
            ):
                continue
            failed = result.is_error or is_tool_error(result.content)
            self.messages.append(
                InnerMessage(
                    source, "tool_result", result.content, result.name, result.call_id, failed
                )
            )
            events.append(
                ToolCallFinished(result.name, failed, source, result.call_id, result.content)
            )
        return events

    def handoff(self, source: str, target: str, content: str) -> None:
        self.last_chat = message = InnerMessage(source, "handoff", content, target)
        self.messages.append(message)
        self._rounds[source] = 0

    def text(self, source: str, content: str) -> None:
        self.last_chat = message = InnerMessage(source, "text", content)
        self.reply = content
        # Past its last tool round an agent must answer: its reply was forced.
        forced = self._rounds.get(source, 0) >= self._max_rounds
        self.reply_reason = "max_tool_rounds" if forced else "reply"
        self.messages.append(message)
        self._rounds[source] = 0

    def other_chat(self, source: str) -> None:
        """A chat message of no kind above (a team's stop message, say): a new round."""
        self._rounds[source] = 0

    def awaiting(self, lineup: Lineup) -> Awaiting | None:
        """What the turn ended waiting for: the user's answer, decisions on calls, or the
        results of frontend tools."""
        last = self.last_chat
        if last is None or last.type != "handoff" or last.name != USER:
            return None
        calls = self.last_calls.get(last.source, ())
        # The client's page runs these first. A call that needs approval made in the same
        # answer is not paused as well: the model is told it waits, and may ask again.
        frontend = tuple(
            PendingCall(id=call.id, name=call.name, arguments=call.arguments)
            for call in calls
            if call.id in self._frontend_calls
        )
        if frontend:
            return Awaiting(kind="frontend_tools", agent=last.source, calls=frontend)
        needs_approval = lineup.members[last.source].needs_approval
        pending = tuple(
            PendingCall(id=call.id, name=call.name, arguments=call.arguments)
            for call in self.last_calls.get(last.source, ())
            if call.name in needs_approval
        )
        return Awaiting(kind="approval" if pending else "input", agent=last.source, calls=pending)


def keeps_state(lineup: Lineup, awaiting: Awaiting | None) -> bool:
    """Whether the next turn needs the engine's state: a team's, or a paused lone agent's."""
    return lineup.kind != "single" or (awaiting is not None and awaiting.kind != "input")


async def turn_result(
    transcript: Transcript,
    lineup: Lineup,
    *,
    engine: str,
    limit_reason: StopReason | None,
    usage: TurnUsage,
    keep_state: bool,
    save_state: Callable[[], Awaitable[dict[str, Any]]],
) -> TurnResult:
    """The turn's end: its reply and why it stopped, and the state a session keeps."""
    awaiting = transcript.awaiting(lineup)
    if awaiting is not None and awaiting.kind == "approval":
        stop_reason: StopReason = "awaiting_approval"
        reply = "Waiting for approval: " + ", ".join(c.name for c in awaiting.calls) + "."
    elif awaiting is not None and awaiting.kind == "frontend_tools":
        stop_reason = "awaiting_frontend_tools"
        names = ", ".join(call.name for call in awaiting.calls)
        reply = f"Waiting for the application's tools: {names}."
    elif awaiting is not None:
        stop_reason = "awaiting_input"
        reply = transcript.last_chat.content if transcript.last_chat else ""
    else:
        stop_reason = limit_reason or transcript.reply_reason
        reply = transcript.reply
    state: SavedState | None = None
    if keep_state and keeps_state(lineup, awaiting):
        state = SavedState(
            engine=engine,
            kind=lineup.kind,
            agents=lineup.names,
            engine_state=await save_state(),
            awaiting=awaiting,
        )
    return TurnResult(
        reply=reply,
        stop_reason=stop_reason,
        messages=tuple(transcript.messages),
        pending=awaiting.calls if awaiting else (),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        tool_calls=transcript.tool_calls,
        state=state,
    )


@dataclass(frozen=True)
class Posted:
    """A chat message of a team's turn, as the turn-end policy reads it."""

    source: str
    kind: Literal["text", "to_user", "other"]  # "to_user": a handoff to the user


class TurnEnd:
    """When a team's turn ends: at a reply (the replier's, or any agent's text when the team
    has none), at a question or approval for the user, or at a limit (messages, tokens spent
    by the turn's model calls, time). `reason` keeps the limit, for the result."""

    def __init__(self, replier: str | None, limits: TurnLimits, usage: TurnUsage) -> None:
        self._replier = replier
        self._limits = limits
        self._usage = usage
        self._deadline = time.monotonic() + limits.team_turn_seconds
        self._messages = 0
        self._agents_spoke = False
        self.reason: StopReason | None = None

    def after(self, posted: Sequence[Posted]) -> StopReason | None:
        """Why the turn ends after `posted`; None while it goes on."""
        reason: StopReason | None = None
        agents_spoke = False
        for message in posted:
            self._messages += 1
            agents_spoke = agents_spoke or message.source != USER
            if message.kind == "to_user":
                reason = "awaiting_input"  # the result tells input from approval
            elif (
                message.kind == "text"
                and message.source != USER
                and self._replier in (None, message.source)
            ):
                reason = "reply"
        self._agents_spoke = self._agents_spoke or agents_spoke
        if reason is None and agents_spoke:  # a limit never ends a turn before it starts
            usage = self._usage
            if self._messages >= self._limits.team_max_messages:
                reason = "max_messages"
            elif usage.prompt_tokens + usage.completion_tokens >= self._limits.team_token_budget:
                reason = "token_budget"
            elif time.monotonic() >= self._deadline:
                reason = "deadline"
        if reason is not None and reason not in ("reply", "awaiting_input"):
            self.reason = reason
        return reason

    def ends_at(self, failure: BaseException) -> bool:
        """Whether a model call's `failure` ends the turn as a limit does: a call that the
        caller's budget refused once agents had spoken, so that what they said is kept. A
        turn refused before that fails whole, with nothing spent."""
        if (
            isinstance(failure, ModelCallRefused)
            and failure.type in BUDGET_REFUSALS
            and self._agents_spoke
        ):
            self.reason = BUDGET_EXHAUSTED
            return True
        return False
