"""The conversation a turn continues: where its history comes from and where the turn goes.

Every chat endpoint takes the same steps, written once in `service.ChatService.begin`:
begin (lock the conversation, read its history and saved state) → run the turn → commit
(save the turn with its reply and the state the agents left) → release (unlock, whether
or not it was committed). Without sessions the history is what the client sent and there
is nothing to save; the sessions feature plugs in a store that keeps conversations in Redis.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from ..contract import ChatMessage, ChatRequest
from ..errors import ApiError

DisconnectCheck = Callable[[], Awaitable[bool]]


class PendingCall(BaseModel):
    """A tool call waiting for a person's approval, or for the result of a frontend tool."""

    model_config = ConfigDict(strict=True, frozen=True)

    id: str
    name: str
    arguments: str  # as the model wrote them: a JSON object in text, or not


class Awaiting(BaseModel):
    """What a paused conversation waits for: the user's answer, decisions on tool calls, or
    the results of the frontend tools that the client's page runs (AG-UI)."""

    model_config = ConfigDict(strict=True, frozen=True)

    kind: Literal["input", "approval", "frontend_tools"]
    agent: str  # the one that asked, and that goes on once answered
    calls: tuple[PendingCall, ...] = ()


class SavedState(BaseModel):
    """What the agents leave for the next turn: a team's state, or a turn paused for approval,
    in an envelope that names the engine whose state it holds.

    Strict, as it is read back from storage that anyone may have written: a value of the
    wrong type is refused when the record is read, never found out in the middle of a turn.
    """

    model_config = ConfigDict(strict=True, frozen=True)

    # The name of the engine that saved it (`project.ENGINE`). Template 0.3 and earlier ran
    # on AutoGen alone and kept its state under `autogen`, with no name: read as AutoGen's.
    # (An alias rather than a `before` validator, which would validate the record as Python
    # data, where strict mode takes no JSON array for a tuple.)
    engine: str = "autogen"
    kind: str  # of the lineup that saved it: "single", or a team's kind
    agents: tuple[str, ...]
    # The engine's own, which only that engine reads.
    engine_state: dict[str, Any] = Field(validation_alias=AliasChoices("engine_state", "autogen"))
    awaiting: Awaiting | None = None


class Conversation(Protocol):
    """One turn's hold on the conversation it continues."""

    @property
    def history(self) -> Sequence[ChatMessage]:
        """Stored messages that come before the request's own."""
        ...

    @property
    def state(self) -> SavedState | None:
        """What the agents left after the previous turn (a team's state), if anything."""
        ...

    @property
    def keeps_state(self) -> bool:
        """Whether `commit` keeps the agents' state: if not, it need not be made."""
        ...

    async def commit(self, reply: str | None, state: SavedState | None) -> None:
        """Save the turn (the request's messages, `reply` unless None, and the agents'
        `state`), then release."""
        ...

    async def release(self) -> None:
        """Let go without saving; does nothing once committed or released."""
        ...

    @property
    def interruption(self) -> asyncio.Future[ApiError] | None:
        """Done, with the error this turn ends with unsaved, once a newer turn has taken the
        conversation over; None where no turn can (`SESSION_BUSY_POLICY`)."""
        ...


class Conversations(Protocol):
    async def begin(
        self,
        caller: str,
        request: ChatRequest,
        *,
        deadline: float,
        is_disconnected: DisconnectCheck,
    ) -> Conversation:
        """Take hold of the conversation `request` continues, on behalf of `caller`; a wait
        for it ends at the turn's `deadline` (the event loop's clock), 504, or once the
        client has gone, 499."""
        ...


class Unsaved:
    """A conversation the client carries: no stored history, nothing to save."""

    history: Sequence[ChatMessage] = ()
    state: SavedState | None = None
    keeps_state = False

    async def commit(self, reply: str | None, state: SavedState | None) -> None:
        pass

    async def release(self) -> None:
        pass

    # No other turn shares a conversation the client holds: it is never interrupted.
    interruption: asyncio.Future[ApiError] | None = None


class ClientHeldConversations:
    """Every conversation is the client's to send whole: a service without sessions."""

    async def begin(
        self,
        caller: str,
        request: ChatRequest,
        *,
        deadline: float,
        is_disconnected: DisconnectCheck,
    ) -> Conversation:
        if request.session_id is not None:
            raise ApiError(
                422,
                "invalid_request",
                "session_id: this service keeps no sessions; send the whole conversation "
                "in `messages` instead",
            )
        return Unsaved()
