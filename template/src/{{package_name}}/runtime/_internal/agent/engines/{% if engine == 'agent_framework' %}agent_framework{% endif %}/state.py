"""What one turn's middleware shares: the agent, its story so far, and where its events go.

The model client and its middleware are the process's; a turn's own state reaches them
through `current_turn`, set by the turn for the task that runs it."""

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from agent_framework import Content

from ....settings import PayloadLogging
from ...lineup import Member
from ...transcript import Call, Transcript
from ...turn import TurnEvent


@dataclass
class TurnState:
    agent: str
    member: Member
    transcript: Transcript
    emit: Callable[[TurnEvent], None]
    payload_logging: PayloadLogging
    # The arguments of each call, by the model's call id, as the model wrote them: Agent
    # Framework hands tools `{"raw": text}` for arguments that are no JSON object.
    arguments: dict[str, str] = field(default_factory=dict)

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
