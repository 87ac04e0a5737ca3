"""What one turn's middleware shares: the agent, its story so far, and where its events go.

The model client and its middleware are the process's; a turn's own state reaches them
through `current_turn`, set by the turn for the task that runs it."""

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from agent_framework import Content

from ....settings import PayloadLogging
from ...lineup import Member
from ...transcript import Call, Transcript
from ...turn import TurnEvent


@dataclass
class TurnState:
    # The agent whose model and tool calls these are: in a team, the one speaking now.
    agent: str
    member: Member
    transcript: Transcript
    emit: Callable[[TurnEvent], None]
    payload_logging: PayloadLogging
    # The arguments of each call, by the model's call id, as the model wrote them: Agent
    # Framework hands tools `{"raw": text}` for arguments that are no JSON object.
    arguments: dict[str, str] = field(default_factory=dict)
    # A handoff the speaker's run ends with, (target, content): told once the calls made
    # along with it answered, as AutoGen tells them.
    handoff: tuple[str, str] | None = None

    def hand_over(self, target: str, content: str) -> None:
        self.handoff = (target, content)

    def run_ended(self) -> bool:
        """Tells the transcript of the handoff the speaker's run ended with: whether it did."""
        if self.handoff is None:
            return False
        target, content = self.handoff
        self.handoff = None
        self.transcript.handoff(self.agent, target, content)
        return True

    def calls_requested(self, calls: Sequence[Content]) -> None:
        requested = [
            Call(
                id=call.call_id or "",
                name=call.name or "",
                arguments=call.arguments if isinstance(call.arguments, str) else "",
            )
            for call in calls
        ]
        self.arguments.update({call.id: call.arguments for call in requested})
        for event in self.transcript.calls_requested(self.agent, requested):
            self.emit(event)


current_turn: ContextVar[TurnState | None] = ContextVar("agent_framework_turn", default=None)


async def events_while(
    answering: Coroutine[Any, Any, None], events: "asyncio.Queue[TurnEvent]"
) -> AsyncIterator[TurnEvent]:
    """The events `answering` puts in `events` as it runs, until it ends: its failure is
    raised; stopping the iteration cancels it, its model call included."""
    task = asyncio.create_task(answering)
    waiting: asyncio.Future[TurnEvent] | None = None
    try:
        while True:
            waiting = asyncio.ensure_future(events.get())
            await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                yield waiting.result()
                continue
            waiting.cancel()
            while not events.empty():
                yield events.get_nowait()
            break
        task.result()  # its failure, if it failed
    finally:
        if waiting is not None:
            waiting.cancel()  # a run stopped while waiting for the next event
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
