"""The model client every turn shares: Agent Framework's Chat Completions client on our own
openai SDK client (retries, timeout, the offline model's transport), with each model call
observed and its usage noted for the turn."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import openai
import structlog
from agent_framework import (
    AgentSession,
    ChatContext,
    ChatMiddleware,
    ChatMiddlewareLayer,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    InMemoryHistoryProvider,
    Message,
    ResponseStream,
)
from agent_framework.exceptions import ChatClientException
from agent_framework.openai import RawOpenAIChatCompletionClient

from ....contract import ChatMessage
from ....settings import PayloadLogging
from ...approvals import AWAITING_APPROVAL
from ...conversation import PendingCall
from ...instrumentation import Instrumentation, ModelCallRecord
from ...tools import is_tool_error
from ...turn import UnusableAnswer, count_model_usage, noting_model_failure
from ...upstream import UpstreamOptions
from .state import current_turn

log = structlog.get_logger(__name__)

# Where an agent's session keeps its messages.
HISTORY_SOURCE = InMemoryHistoryProvider.DEFAULT_SOURCE_ID


class ServiceChatClient(
    FunctionInvocationLayer[Any],
    ChatMiddlewareLayer[Any],
    RawOpenAIChatCompletionClient[Any],
):
    """`OpenAIChatCompletionClient` without its telemetry layer: the service makes one span
    per model call itself (`ObservedModelCalls`), and Agent Framework's own would be a
    second, beside it."""


class ObservedModelCalls(ChatMiddleware):
    """Puts every model call of a turn under the instrumentation, adds its usage to the
    turn's, notes the tool calls it asked for, and logs what it is sent when asked to."""

    def __init__(self, instrumentation: Instrumentation, model: str) -> None:
        self._observe = instrumentation.model_call
        self._model = model

    async def process(self, context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
        turn = current_turn.get()
        if turn is not None and turn.payload_logging != "off":
            tool_names = {
                c.call_id or "": c.name or ""
                for m in context.messages
                for c in m.contents
                if c.type == "function_call"
            }
            log.info(
                "model input",
                messages=[_describe(m, turn.payload_logging, tool_names) for m in context.messages],
            )
        if not context.stream:
            with self._observe(self._model) as call, noting_model_failure(), _unwrapped():
                await call_next()
                assert isinstance(context.result, ChatResponse)
                _answered(call, context.result)
            return
        await call_next()
        stream = context.result
        assert isinstance(stream, ResponseStream)
        context.result = ResponseStream(
            self._observed(stream), finalizer=lambda _: stream.get_final_response()
        )

    async def _observed(
        self, stream: "ResponseStream[ChatResponseUpdate, ChatResponse[Any]]"
    ) -> AsyncIterator[ChatResponseUpdate]:
        # The call is made as the stream is read: its span spans the reading.
        with self._observe(self._model) as call, noting_model_failure(), _unwrapped():
            async for update in stream:
                yield update
            _answered(call, await stream.get_final_response())


@contextmanager
def _unwrapped() -> Iterator[None]:
    """The model's own error, which the client wraps in a `ChatClientException`: what the
    model call's span and the service's error mapping tell apart."""
    try:
        yield
    except ChatClientException as error:
        if isinstance(error.__cause__, openai.OpenAIError | json.JSONDecodeError):
            raise error.__cause__ from None
        raise


def _answered(call: ModelCallRecord, response: ChatResponse[Any]) -> None:
    if not response.messages:
        # A completion with no choices: Agent Framework would take it for an empty answer.
        raise UnusableAnswer("the model's answer has no choices")
    details = response.usage_details or {}
    prompt_tokens = details.get("input_token_count") or 0
    completion_tokens = details.get("output_token_count") or 0
    count_model_usage(prompt_tokens, completion_tokens)
    calls = [c for m in response.messages for c in m.contents if c.type == "function_call"]
    turn = current_turn.get()
    if turn is not None and calls:
        turn.calls_requested(calls)
    for content in calls:
        if _nested_too_deeply(content.arguments):
            # Agent Framework would parse them again before any middleware, and fail the
            # turn; `ToolCalls` refuses them from the text the turn noted.
            content.arguments = {"raw": content.arguments}
    call.answered(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason=str(response.finish_reason or ""),
        tool_names=[c.name or "" for c in calls],
    )


def _nested_too_deeply(arguments: object) -> bool:
    if not isinstance(arguments, str):
        return False
    try:
        json.loads(arguments)
    except RecursionError:
        return True
    except ValueError:
        return False
    return False


def content_text(content: Content) -> str:
    """A message part as text, for token counts and logs."""
    if content.type == "function_call":
        arguments = content.arguments
        return f"{content.call_id} {content.name} {arguments if isinstance(arguments, str) else ''}"
    if content.type == "function_result":
        return f"{content.call_id} {result_text(content)}"
    return content.text or ""


def result_text(content: Content) -> str:
    """A function result's text, as the model is sent it."""
    result = content.result
    if isinstance(result, str):
        return result
    if isinstance(result, list):
        return "".join(part.text or "" for part in result if isinstance(part, Content))
    return "" if result is None else str(result)


def history_message(message: ChatMessage) -> Message:
    role = "assistant" if message.role == "assistant" else "user"
    return Message(role=role, contents=[Content.from_text(message.content)])


def transcript_session(
    history: Sequence[ChatMessage], paused: Sequence[PendingCall] = ()
) -> AgentSession:
    """An agent's session holding the conversation `history`, as this engine keeps one, and
    the `paused` calls as this engine pauses them (their results placeholders): for a
    conversation whose state another engine saved."""
    messages = [history_message(message) for message in history]
    if paused:
        calls = [Content.from_function_call(c.id, c.name, arguments=c.arguments) for c in paused]
        results = [Content.from_function_result(c.id, result=AWAITING_APPROVAL) for c in paused]
        messages.append(Message(role="assistant", contents=calls))
        messages.append(Message(role="tool", contents=results))
    session = AgentSession()
    session.state[HISTORY_SOURCE] = {"messages": messages}
    return session


def message_text(message: Message) -> str:
    return " ".join(content_text(content) for content in message.contents)


# The names the `model input` line gives messages, the same on every engine.
_MESSAGE_TYPES = {
    "user": "UserMessage",
    "assistant": "AssistantMessage",
    "tool": "FunctionExecutionResultMessage",
    "system": "SystemMessage",
}


def _describe(
    message: Message, payload_logging: PayloadLogging, tool_names: Mapping[str, str]
) -> dict[str, Any]:
    text = message_text(message)
    kind = _MESSAGE_TYPES.get(message.role, message.role)
    if payload_logging == "content":
        return {"type": kind, "content": text}
    shape: dict[str, Any] = {"type": kind, "chars": len(text)}
    calls = [c.name for c in message.contents if c.type == "function_call"]
    if calls:
        shape["tool_calls"] = calls
    results = [c for c in message.contents if c.type == "function_result"]
    if results:
        shape["tool_results"] = [
            {
                "name": tool_names.get(r.call_id or "", ""),
                "chars": len(result_text(r)),
                "is_error": is_tool_error(result_text(r)),
            }
            for r in results
        ]
    return shape


def build_client(
    upstream: UpstreamOptions,
    instrumentation: Instrumentation,
    *,
    max_tool_iterations: int,
    middleware: list[Any],
) -> ServiceChatClient:
    """The process-wide model client; the openai SDK inside does the retries and timeouts."""
    sdk = openai.AsyncOpenAI(
        api_key=upstream.api_key,
        base_url=upstream.base_url,
        max_retries=upstream.max_retries,
        timeout=upstream.timeout,
        http_client=upstream.http_client,
    )
    return ServiceChatClient(
        model=upstream.model,
        async_client=sdk,
        middleware=[ObservedModelCalls(instrumentation, upstream.model), *middleware],
        function_invocation_configuration={"max_iterations": max_tool_iterations},
    )
