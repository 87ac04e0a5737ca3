"""Every AutoGen call of the service lives here, so moving framework touches one module.

AutoGen objects are split by lifetime: the model client and the tools are built
once per process; an agent and its model context are built for one request and
dropped with it, because an `AssistantAgent` keeps the conversation it ran.
"""

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import openai
import structlog
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import (
    ModelClientStreamingChunkEvent,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_core import CancellationToken, FunctionCall, trace_tool_span
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    UserMessage,
)
from autogen_core.tools import FunctionTool, StaticStreamWorkbench, ToolSchema, Workbench
from autogen_ext.models.openai import OpenAIChatCompletionClient

from ..http.schemas import ChatMessage
from ..settings import CoreSettings
from .fake_upstream import create_fake_upstream
from .history import trim_to_budget
from .instrumentation import Instrumentation, ModelCallRecord
from .tokens import TokenCounter, message_tokens
from .tools import ServiceTool, is_tool_error

log = structlog.get_logger(__name__)

# Assumed for model names the openai client does not know (vLLM, Ollama, gateways).
_GENERIC_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)
_OFFLINE_BASE_URL = "http://offline-model.invalid/v1"

PayloadLogging = Literal["off", "shape", "content"]
# The AutoGen types other runtime modules name, so that they import nothing from AutoGen.
ModelClient = ChatCompletionClient
AgentTool = FunctionTool


@dataclass(frozen=True)
class TextDelta:
    """A piece of the model's text, as it streams in."""

    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    name: str
    arguments: str  # as the model wrote them: may be invalid JSON, may hold personal data


@dataclass(frozen=True)
class ToolCallFinished:
    name: str
    is_error: bool


@dataclass(frozen=True)
class TurnResult:
    """The turn's end: always the last event of a run."""

    reply: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: int


TurnEvent = TextDelta | ToolCallStarted | ToolCallFinished | TurnResult


class _ServiceModelClient(OpenAIChatCompletionClient):
    """Asks for token usage on streamed calls too (otherwise a streamed turn reports 0), and
    puts every model call under the instrumentation: AutoGen traces agents and tools, not
    these calls."""

    def __init__(self, instrumentation: Instrumentation, **options: Any) -> None:
        super().__init__(**options)
        self._model = options["model"]
        self._observe = instrumentation.model_call

    async def create(self, *args: Any, **kwargs: Any) -> CreateResult:
        with self._observe(self._model) as call:
            result = await super().create(*args, **kwargs)
            _record_answer(call, result)
        return result

    async def create_stream(
        self, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        with self._observe(self._model) as call:
            stream = super().create_stream(*args, **{**kwargs, "include_usage": True})
            async for item in stream:
                if isinstance(item, CreateResult):
                    _record_answer(call, item)
                yield item


def _record_answer(call: ModelCallRecord, result: CreateResult) -> None:
    call.answered(
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        finish_reason=result.finish_reason,
        tool_names=[c.name for c in result.content] if isinstance(result.content, list) else [],
    )


def build_model_client(
    settings: CoreSettings, instrumentation: Instrumentation
) -> ChatCompletionClient:
    """The process-wide model client; the openai SDK inside does the retries and timeouts."""
    options: dict[str, Any] = {
        "model": settings.model_label,
        "max_retries": settings.model_max_retries,
        "timeout": settings.model_timeout_seconds,
    }
    if settings.model_send_max_tokens:
        options["max_tokens"] = settings.reply_reserve_tokens
    if settings.model_provider == "offline":
        transport = httpx.ASGITransport(app=create_fake_upstream(), raise_app_exceptions=False)
        http_client = httpx.AsyncClient(transport=transport)
        options["base_url"] = _OFFLINE_BASE_URL
        options["api_key"] = "offline"
    else:
        http_client = openai.DefaultAsyncHttpxClient()
        if settings.model_base_url is not None:
            options["base_url"] = str(settings.model_base_url)
        key = settings.model_api_key
        # Local servers such as Ollama take no key, but the SDK insists on one.
        options["api_key"] = key.get_secret_value() if key else "unused"
    if instrumentation.upstream_attempt is not None:
        # The SDK retries below AutoGen, where no result shows it: each attempt is seen here.
        http_client.event_hooks = {"request": [instrumentation.upstream_attempt]}
    options["http_client"] = http_client
    try:
        return _ServiceModelClient(instrumentation, **options)
    except ValueError:  # a model name the client has no capability table for
        return _ServiceModelClient(instrumentation, **options, model_info=_GENERIC_MODEL_INFO)


class _JsonSafeFunctionTool(FunctionTool):
    """A FunctionTool whose arguments, result and errors are handled by `ServiceTool.invoke`."""

    def __init__(
        self, service_tool: ServiceTool, max_chars: int, instrumentation: Instrumentation
    ) -> None:
        super().__init__(service_tool.function, service_tool.description, service_tool.name)
        self._service_tool = service_tool
        self._max_chars = max_chars
        self._record_outcome = instrumentation.tool_call
        self._schema = super().schema

    @property
    def schema(self) -> ToolSchema:
        # AutoGen rebuilds the JSON schema from the arguments model on every model call, a
        # tenth of a short turn's CPU; it cannot change, and nothing downstream mutates it.
        return self._schema

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> str:
        # AutoGen's own span, which the base class opens and this override would otherwise lose.
        with trace_tool_span(self.name, tool_description=self.description, tool_call_id=call_id):
            result = await self._service_tool.call(args, max_chars=self._max_chars)
            self._record_outcome(self.name, result.outcome)
        return result.text

    def return_value_as_string(self, value: Any) -> str:
        return str(value)

    def reject_arguments(self, problem: str, call_id: str) -> str:
        """What the model receives for a call whose arguments never reached `run_json`."""
        # Its own span, as `run_json`, so that the outcome is recorded on it.
        with trace_tool_span(self.name, tool_description=self.description, tool_call_id=call_id):
            result = self._service_tool.reject_arguments(problem, max_chars=self._max_chars)
            self._record_outcome(self.name, result.outcome)
        return result.text


def _arguments_problem(arguments: str) -> str | None:
    """What makes tool arguments, as the model wrote them, no JSON object; None if nothing."""
    try:
        parsed = json.loads(arguments)
    except ValueError as error:
        return f"arguments: not valid JSON ({error})"
    except RecursionError:
        return "arguments: not valid JSON (nested too deeply)"
    if not isinstance(parsed, dict):
        return "arguments: must be a JSON object, one member per argument"
    return None


class _ToolWorkbench(StaticStreamWorkbench):
    """The agent's tools, held as AutoGen holds them for `tools=`, and by name for
    `_ServiceAgent`."""

    def __init__(self, tools: Sequence[FunctionTool]) -> None:
        super().__init__(list(tools))
        self.tools_by_name = {tool.name: tool for tool in tools}


class _ServiceAgent(AssistantAgent):
    """An AssistantAgent whose tools answer every call, arguments that are no JSON object
    included: for those AutoGen sends the model its parser's bare message (`Error:
    Expecting ...`), calls the tool with no arguments, or, nested too deeply, stalls the
    turn until its deadline."""

    @staticmethod
    async def _execute_tool_call(
        tool_call: FunctionCall, workbench: Sequence[Workbench], **rest: Any
    ) -> tuple[FunctionCall, FunctionExecutionResult]:
        problem = _arguments_problem(tool_call.arguments)
        [tools] = workbench  # the one `run_turn` gives the agent
        tool = tools.tools_by_name.get(tool_call.name)
        if problem is None or not isinstance(tool, _JsonSafeFunctionTool):
            return await AssistantAgent._execute_tool_call(
                tool_call=tool_call, workbench=workbench, **rest
            )
        result = FunctionExecutionResult(
            content=tool.reject_arguments(problem, tool_call.id),
            name=tool_call.name,
            call_id=tool_call.id,
            is_error=True,
        )
        return tool_call, result


def build_tools(
    service_tools: Sequence[ServiceTool], max_chars: int, instrumentation: Instrumentation
) -> list[FunctionTool]:
    """Wrap tools once at start-up: wrapping costs about a millisecond per tool."""
    names = [t.name for t in service_tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
    return [_JsonSafeFunctionTool(t, max_chars, instrumentation) for t in service_tools]


def prompt_overhead_tokens(
    system_prompt: str, tools: Sequence[FunctionTool], count: TokenCounter
) -> int:
    """Tokens every model call spends before the history: the system prompt and tool schemas."""
    schemas = sum(count(json.dumps(tool.schema)) for tool in tools)
    return message_tokens(count, system_prompt) + schemas


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


def _history_message(message: ChatMessage, agent_name: str) -> LLMMessage:
    if message.role == "assistant":
        return AssistantMessage(content=message.content, source=agent_name)
    return UserMessage(content=message.content, source="user")


async def run_turn(
    *,
    model_client: ChatCompletionClient,
    tools: Sequence[FunctionTool],
    agent_name: str,
    system_prompt: str,
    messages: Sequence[ChatMessage],
    max_tool_iterations: int,
    history_budget: int,
    count_tokens: TokenCounter,
    payload_logging: PayloadLogging,
    stream_text: bool,
    cancellation_token: CancellationToken,
    instrumentation: Instrumentation,
) -> AsyncIterator[TurnEvent]:
    """Answer the newest user message, with the earlier messages as history, on a fresh agent.

    Yields tool calls as they start and finish, text deltas when `stream_text` is set, and
    a `TurnResult` last.
    """
    *history, newest = messages
    agent = _ServiceAgent(
        name=agent_name,
        model_client=model_client,
        workbench=_ToolWorkbench(tools),
        system_message=system_prompt,
        model_context=TurnTrimmingContext(
            [_history_message(m, agent_name) for m in history],
            history_budget,
            count_tokens,
            payload_logging,
            instrumentation.history_trimmed,
        ),
        reflect_on_tool_use=True,
        max_tool_iterations=max_tool_iterations,
        model_client_stream=stream_text,
    )
    task = TextMessage(content=newest.content, source="user")
    run = agent.run_stream(task=task, cancellation_token=cancellation_token)
    with instrumentation.agent_run():
        async with aclosing(run) as items:
            async for item in items:
                if isinstance(item, ModelClientStreamingChunkEvent):
                    yield TextDelta(item.content)
                elif isinstance(item, ToolCallRequestEvent):
                    for call in item.content:
                        yield ToolCallStarted(call.name, call.arguments)
                elif isinstance(item, ToolCallExecutionEvent):
                    for result in item.content:
                        # Our tools answer errors as JSON; AutoGen flags only what it caught itself.
                        failed = result.is_error or is_tool_error(result.content)
                        yield ToolCallFinished(result.name, failed)
                elif isinstance(item, TaskResult):
                    yield _turn_result(item)


def _turn_result(result: TaskResult) -> TurnResult:
    usages = [m.models_usage for m in result.messages if m.models_usage is not None]
    return TurnResult(
        reply=result.messages[-1].to_text(),
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        tool_calls=sum(
            len(m.content) for m in result.messages if isinstance(m, ToolCallRequestEvent)
        ),
    )


def raised_by_framework(error: BaseException) -> bool:
    """Whether the error was raised inside AutoGen or the openai SDK rather than our code."""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    module = traceback.tb_frame.f_globals.get("__name__", "")
    return module.startswith(("autogen_", "openai"))


def new_cancellation_token() -> CancellationToken:
    """One per request: a reused token keeps every callback ever linked to it."""
    return CancellationToken()
