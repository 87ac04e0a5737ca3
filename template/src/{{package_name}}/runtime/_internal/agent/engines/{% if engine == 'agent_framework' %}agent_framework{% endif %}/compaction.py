"""An agent's history kept within its token budget, as Agent Framework compacts it before
each model call: whole turns dropped, oldest first (`history.trim_to_budget`).

The stock strategies count their own tokens and group messages their own way; a sliding
window can leave a tool result without its call, which OpenAI rejects, and none keeps to
the budget the service computed for the agent's prompt and tools.
"""

from collections.abc import Callable

import structlog
from agent_framework import EXCLUDE_REASON_KEY, EXCLUDED_KEY, Message, included_messages

from ...history import trim_to_budget
from ...specs import USER
from ...tokens import TokenCounter, message_tokens
from .client import message_text

log = structlog.get_logger(__name__)


def starts_turn_of(message: Message) -> bool:
    """Whether `message` is the user's, which starts a turn: a teammate's message reaches an
    agent of a team as a user message too, but with the teammate's name."""
    return message.role == "user" and message.author_name in (None, USER)


class TurnSafeCompaction:
    """A `CompactionStrategy` that excludes the oldest whole turns until the rest fits."""

    def __init__(self, budget: int, count: TokenCounter, on_trim: Callable[[], None]) -> None:
        self._budget = budget
        self._count = count
        self._on_trim = on_trim

    async def __call__(self, messages: list[Message]) -> bool:
        kept = included_messages(messages)
        costs = [message_tokens(self._count, message_text(message)) for message in kept]
        starts_turn = [starts_turn_of(message) for message in kept]
        trim = trim_to_budget(costs, starts_turn, self._budget)
        if trim.first_kept == 0:
            return False
        self._on_trim()
        log.info(
            "history trimmed",
            dropped_messages=trim.first_kept,
            dropped_tokens=trim.dropped_tokens,
            kept_messages=len(kept) - trim.first_kept,
            kept_tokens=trim.kept_tokens,
            budget=self._budget,
        )
        for message in kept[: trim.first_kept]:
            # As the framework's own strategies mark a message, by its public keys.
            message.additional_properties[EXCLUDED_KEY] = True
            message.additional_properties[EXCLUDE_REASON_KEY] = "history budget"
        return True
