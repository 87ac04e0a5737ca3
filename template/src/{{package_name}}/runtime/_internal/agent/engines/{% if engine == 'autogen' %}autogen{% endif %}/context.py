"""An agent's model context: the history it is sent, kept within its token budget."""

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    UserMessage,
)

from ....settings import PayloadLogging
from ...history import trim_to_budget
from ...tokens import TokenCounter, message_tokens

log = structlog.get_logger(__name__)


def message_text(message: LLMMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    if isinstance(message, FunctionExecutionResultMessage):
        return " ".join(f"{result.call_id} {result.content}" for result in content)
    if isinstance(message, AssistantMessage):  # its tool calls
        return " ".join(f"{call.id} {call.name} {call.arguments}" for call in content)
    return " ".join(part for part in content if isinstance(part, str))  # text beside images


class TurnTrimmingContext(ChatCompletionContext):
    """Keeps the history within a token budget by dropping whole turns, oldest first.

    The stock `TokenLimitedChatCompletionContext` drops single messages and can leave a
    tool result without its call, which OpenAI rejects; see `history.trim_to_budget`.
    """

    def __init__(
        self,
        initial_messages: list[LLMMessage],
        budget: int,
        count: TokenCounter,
        payload_logging: PayloadLogging = "off",
        on_trim: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(initial_messages)
        self._budget = budget
        self._count = count
        self._payload_logging = payload_logging
        self._on_trim = on_trim
        self._costs = [message_tokens(count, message_text(m)) for m in self._messages]

    async def add_message(self, message: LLMMessage) -> None:
        self._messages.append(message)
        self._costs.append(message_tokens(self._count, message_text(message)))
        self._trim()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await super().load_state(state)
        self._costs = [message_tokens(self._count, message_text(m)) for m in self._messages]
        self._trim()

    def settle(self, results: Mapping[str, FunctionExecutionResult]) -> None:
        """Put the results of calls that waited for approval in place of their placeholders."""
        for index, message in enumerate(self._messages):
            if isinstance(message, FunctionExecutionResultMessage):
                settled = [results.get(r.call_id, r) for r in message.content]
                self._messages[index] = settled_message = FunctionExecutionResultMessage(
                    content=settled
                )
                self._costs[index] = message_tokens(self._count, message_text(settled_message))

    async def get_messages(self) -> list[LLMMessage]:
        """What the next model call is sent, after the system prompt."""
        if self._payload_logging != "off":
            log.info("model input", messages=[self._describe(m) for m in self._messages])
        return list(self._messages)

    def _describe(self, message: LLMMessage) -> dict[str, Any]:
        text = message_text(message)
        if self._payload_logging == "content":
            return {"type": type(message).__name__, "content": text}
        shape: dict[str, Any] = {"type": type(message).__name__, "chars": len(text)}
        if isinstance(message, AssistantMessage) and isinstance(message.content, list):
            shape["tool_calls"] = [call.name for call in message.content]
        if isinstance(message, FunctionExecutionResultMessage):
            shape["tool_results"] = [
                {"name": r.name, "chars": len(r.content), "is_error": r.is_error}
                for r in message.content
            ]
        return shape

    def _trim(self) -> None:
        starts_turn = [isinstance(m, UserMessage) for m in self._messages]
        trim = trim_to_budget(self._costs, starts_turn, self._budget)
        if trim.first_kept == 0:
            return
        self._on_trim()
        log.info(
            "history trimmed",
            dropped_messages=trim.first_kept,
            dropped_tokens=trim.dropped_tokens,
            kept_messages=len(self._messages) - trim.first_kept,
            kept_tokens=trim.kept_tokens,
            budget=self._budget,
        )
        del self._messages[: trim.first_kept]
        del self._costs[: trim.first_kept]
