"""Every AutoGen call of the service lives here, so moving framework touches one module.

AutoGen objects are split by lifetime: the model client, the tools and the handoffs are
built once per process (`Crew`); agents, their model contexts and a team are built for
one request and dropped with it, because AutoGen agents and teams keep the conversation
they ran.
"""

import asyncio
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx
import openai
import structlog
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import Handoff, TaskResult, TerminatedException, TerminationCondition
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    BaseTextChatMessage,
    HandoffMessage,
    ModelClientStreamingChunkEvent,
    StopMessage,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat, Swarm
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
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import BaseTool, FunctionTool, StaticStreamWorkbench, ToolSchema, Workbench
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel, PrivateAttr

from ..contract import Approval, ChatMessage, StopReason
from ..settings import CoreSettings
from .conversation import Awaiting, PendingCall, SavedState
from .fake_upstream import create_fake_upstream
from .history import trim_to_budget
from .instrumentation import Instrumentation, ModelCallRecord
from .specs import USER, AgentOrTeam, AgentSpec, TeamSpec
from .tokens import TokenCounter, message_tokens
from .tools import ServiceTool, is_tool_error, limit_size, tool_error_json

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
AgentTool = BaseTool[Any, Any]


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


@dataclass(frozen=True)
class ToolCallFinished:
    name: str
    is_error: bool
    source: str


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


@dataclass
class _TurnRecord:
    """What every model call of one turn adds up to, the selector's included."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_failure: BaseException | None = None


# Set by each run for the model calls made under it, the team runtime's tasks included.
_turn_record: ContextVar[_TurnRecord | None] = ContextVar("turn_record", default=None)


class _ServiceModelClient(OpenAIChatCompletionClient):
    """Asks for token usage on streamed calls too (otherwise a streamed turn reports 0), and
    puts every model call under the instrumentation: AutoGen traces agents and tools, not
    these calls."""

    def __init__(self, instrumentation: Instrumentation, **options: Any) -> None:
        super().__init__(**options)
        self._model = options["model"]
        self._observe = instrumentation.model_call

    async def create(self, *args: Any, **kwargs: Any) -> CreateResult:
        with self._observe(self._model) as call, _noting_failure():
            result = await super().create(*args, **kwargs)
            _record_answer(call, result)
        return result

    async def create_stream(
        self, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        with self._observe(self._model) as call, _noting_failure():
            stream = super().create_stream(*args, **{**kwargs, "include_usage": True})
            async for item in stream:
                if isinstance(item, CreateResult):
                    _record_answer(call, item)
                yield item


@contextmanager
def _noting_failure() -> Iterator[None]:
    """Keeps a model call's failure for the turn: a team reports it as a bare RuntimeError."""
    try:
        yield
    except Exception as error:
        record = _turn_record.get()
        if record is not None:
            record.model_failure = error
        raise


def _record_answer(call: ModelCallRecord, result: CreateResult) -> None:
    record = _turn_record.get()
    if record is not None:
        record.prompt_tokens += result.usage.prompt_tokens
        record.completion_tokens += result.usage.completion_tokens
    call.answered(
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        finish_reason=result.finish_reason,
        tool_names=[c.name for c in result.content] if isinstance(result.content, list) else [],
    )


async def complete(model_client: ModelClient, instructions: str, text: str) -> str:
    """One model call outside any agent (an evaluation's judge, say): its text answer."""
    result = await model_client.create(
        [SystemMessage(content=instructions), UserMessage(content=text, source=USER)]
    )
    return result.content if isinstance(result.content, str) else ""


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


def arguments_problem(arguments: str) -> str | None:
    """What makes tool arguments, in text, no JSON object; None if nothing."""
    try:
        parsed = json.loads(arguments)
    except ValueError as error:
        return f"not valid JSON ({error})"
    except RecursionError:
        return "not valid JSON (nested too deeply)"
    if not isinstance(parsed, dict):
        return "must be a JSON object, one member per argument"
    return None


class _ToolWorkbench(StaticStreamWorkbench):
    """The agent's tools, held as AutoGen holds them for `tools=`, and by name for
    `_ServiceAgent`."""

    def __init__(self, tools: Sequence[BaseTool[Any, Any]]) -> None:
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
        problem = arguments_problem(tool_call.arguments)
        [tools] = workbench  # the one `run_turn` gives the agent
        tool = tools.tools_by_name.get(tool_call.name)
        if problem is None or not isinstance(tool, _JsonSafeFunctionTool | _McpTool):
            return await AssistantAgent._execute_tool_call(
                tool_call=tool_call, workbench=workbench, **rest
            )
        result = FunctionExecutionResult(
            content=tool.reject_arguments(f"arguments: {problem}", tool_call.id),
            name=tool_call.name,
            call_id=tool_call.id,
            is_error=True,
        )
        return tool_call, result


McpServerState = Literal["starting", "ready", "unavailable"]

# What a stdio server writes to its stderr becomes log records: each line cut to this many
# characters, a burst of so many lines, then so many a second; lines beyond are counted.
_STDERR_LINE_CHARS = 1000
_STDERR_BURST_LINES = 100
_STDERR_LINES_PER_SECOND = 10.0


class _StderrRelay:
    """A stdio MCP server's stderr, read from a pipe into log records that carry the
    server's name, rather than written raw into the service's own stderr."""

    def __init__(self, server: str) -> None:
        self._server = server
        read_end, write_end = os.pipe()
        self.sink = os.fdopen(write_end, "w")  # the server's process gets it as its stderr
        self._reading = asyncio.create_task(self._relay(os.fdopen(read_end, "rb")))
        self._tokens = float(_STDERR_BURST_LINES)
        self._refilled = time.monotonic()
        self._dropped = 0

    async def __aenter__(self) -> "_StderrRelay":
        return self

    def started(self) -> None:
        """The server's process has its copy of the pipe: the reader sees the end of it
        when the process ends."""
        self.sink.close()

    async def __aexit__(self, *_: object) -> None:
        self.sink.close()
        # The last lines; a child the server left behind may hold the pipe open, though.
        with suppress(TimeoutError):
            await asyncio.wait_for(self._reading, 5)

    async def _relay(self, pipe: Any) -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        unfinished = b""
        try:
            while chunk := await reader.read(65536):
                *lines, unfinished = (unfinished + chunk).split(b"\n")
                # Only the head of a line is logged: an endless line cannot fill the memory.
                unfinished = unfinished[: 4 * _STDERR_LINE_CHARS]
                for line in lines:
                    self._log(line)
            if unfinished:
                self._log(unfinished)
        finally:
            transport.close()
            if self._dropped:
                self._log_dropped()

    def _log(self, raw: bytes) -> None:
        now = time.monotonic()
        self._tokens = min(
            _STDERR_BURST_LINES,
            self._tokens + (now - self._refilled) * _STDERR_LINES_PER_SECOND,
        )
        self._refilled = now
        if self._tokens < 1:
            self._dropped += 1
            return
        self._tokens -= 1
        if self._dropped:
            self._log_dropped()
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if len(line) > _STDERR_LINE_CHARS:
            line = line[:_STDERR_LINE_CHARS] + " [cut]"
        log.info("mcp server stderr", server=self._server, line=line)

    def _log_dropped(self) -> None:
        log.warning("mcp server stderr lines dropped", server=self._server, lines=self._dropped)
        self._dropped = 0


class McpServer:
    """One MCP server's session, kept for the whole process and started again after a
    failure. Its tools answer the model as the service's own do: JSON text within the size
    cap, a structured error when the server fails, hangs or is gone, never an exception.

    The session is held by the `mcp` SDK's client in a task of its own (`_hold`), since the
    SDK's transports must be entered and left in one task; calls are made from any task.
    """

    def __init__(
        self,
        name: str,
        *,
        command: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
        start_timeout_seconds: float,
        call_timeout_seconds: float,
        max_chars: int,
    ) -> None:
        self.name = name
        self._command = command
        self._args = list(args)
        self._env = dict(env or {})
        self._url = url or ""
        self._headers = dict(headers or {})
        self._start_timeout = start_timeout_seconds
        self._timeout = call_timeout_seconds
        self._max_chars = max_chars
        self._session: Any = None
        self._holder: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._starting = asyncio.Lock()
        self.state: McpServerState = "starting"

    async def start(self) -> list[ToolSchema]:
        """Connect and list the server's tools; raises if the server cannot be reached."""
        listed: asyncio.Future[list[ToolSchema]] = asyncio.get_running_loop().create_future()
        self._stopping = asyncio.Event()
        self._holder = asyncio.create_task(self._hold(listed), name=f"mcp server {self.name}")
        try:
            tools = await asyncio.wait_for(listed, self._start_timeout)
        except BaseException:
            await self.stop()
            raise
        self.state = "ready"
        return tools

    async def _hold(self, listed: "asyncio.Future[list[ToolSchema]]") -> None:
        """Open the session, list the tools into `listed`, and keep the session until
        `stop`, or until the server goes."""
        from mcp import ClientSession  # only services with MCP tools have the `mcp` package

        try:
            async with AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                tools = []
                cursor = None
                while True:
                    page = await session.list_tools(cursor)
                    tools += [
                        ToolSchema(
                            name=tool.name,
                            description=tool.description or "",
                            parameters=tool.inputSchema,  # type: ignore[typeddict-item]
                        )
                        for tool in page.tools
                    ]
                    if not (cursor := page.nextCursor):
                        break
                self._session = session
                listed.set_result(tools)
                await self._stopping.wait()
        except BaseException as error:
            if not listed.done():
                listed.set_exception(error)
            elif not isinstance(error, asyncio.CancelledError):
                log.info("mcp server session ended", server=self.name, error=repr(error))
        finally:
            self._session = None

    @asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client

        if self._command is None:
            # No read limit of its own: the server's event stream idles between messages,
            # and each call has ours.
            timeout = httpx.Timeout(self._start_timeout, read=None)
            async with (
                httpx.AsyncClient(headers=self._headers, timeout=timeout) as http,
                streamable_http_client(self._url, http_client=http) as (read, write, _),
            ):
                yield read, write
            return
        parameters = StdioServerParameters(
            command=self._command, args=self._args, env=self._env or None
        )
        async with (
            _StderrRelay(self.name) as stderr,
            stdio_client(parameters, errlog=stderr.sink) as (read, write),
        ):
            stderr.started()
            yield read, write

    async def stop(self) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        self._stopping.set()
        if self._session is None:  # still starting: there is no session to close cleanly
            holder.cancel()
        done, _ = await asyncio.wait([holder], timeout=self._timeout)
        if not done:  # a crashed server cannot be stopped cleanly
            holder.cancel()
            log.info("mcp server not stopped cleanly", server=self.name)

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        """The tool's answer as the model gets it, and whether it failed."""
        async with self._starting:  # one new session, however many calls find none
            if self._session is None:
                try:
                    await self.start()
                except Exception as error:
                    self.state = "unavailable"
                    log.warning("mcp server unavailable", server=self.name, error=repr(error))
            session = self._session
        if session is None:
            return self._error("mcp_unavailable", "The tool's server cannot be reached."), True
        try:
            result = await asyncio.wait_for(session.call_tool(tool, dict(arguments)), self._timeout)
        except TimeoutError:
            # Hung, or gone without a word: the next call starts a new session either way.
            log.warning("mcp tool timed out", server=self.name, tool=tool)
            await self.stop()
            message = f"The tool did not answer within {self._timeout} seconds."
            return self._error("timeout", message), True
        except Exception as error:
            return await self._lost(tool, error)
        text = "\n".join(
            part.text if part.type == "text" else part.model_dump_json() for part in result.content
        )
        if result.isError:
            log.info("mcp tool reported an error", server=self.name, tool=tool)
            return self._error("tool_error", text, retryable=False), True
        return limit_size(text, self._max_chars), False

    def reject_arguments(self, tool: str, problem: str) -> str:
        """The error for arguments that are no JSON object: the server is not asked, so its
        session stays up."""
        # Cut for the log too: the model writes the arguments, at any size.
        shown = problem[:200]
        log.warning("mcp tool arguments rejected", server=self.name, tool=tool, problem=shown)
        return self._error("invalid_arguments", problem)

    async def _lost(self, tool: str, error: BaseException) -> tuple[str, bool]:
        """The session broke: the next call starts a new one."""
        log.warning("mcp server lost", server=self.name, tool=tool, error=repr(error))
        self.state = "unavailable"
        await self.stop()
        return self._error("mcp_unavailable", "The tool's server stopped answering."), True

    def _error(self, type: str, message: str, *, retryable: bool = True) -> str:
        return tool_error_json(type, message, retryable=retryable, max_chars=self._max_chars)


class _McpTool(BaseTool[BaseModel, BaseModel]):
    """A tool of an MCP server, under the name `<server>_<tool>`."""

    def __init__(
        self, server: McpServer, schema: ToolSchema, instrumentation: Instrumentation
    ) -> None:
        name = f"{server.name}_{schema['name']}"
        super().__init__(BaseModel, BaseModel, name, schema.get("description", ""))
        self._server = server
        self._tool = schema["name"]
        self._schema = ToolSchema(
            name=name, description=schema.get("description", ""), parameters=schema["parameters"]
        )
        self._record_outcome = instrumentation.tool_call

    @property
    def schema(self) -> ToolSchema:
        return self._schema

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> str:
        with trace_tool_span(self.name, tool_description=self.description, tool_call_id=call_id):
            text, failed = await self._server.call(self._tool, args)
            self._record_outcome(self.name, "tool_error" if failed else "ok")
        return text

    def reject_arguments(self, problem: str, call_id: str) -> str:
        """What the model receives for a call whose arguments never reached `run_json`."""
        with trace_tool_span(self.name, tool_description=self.description, tool_call_id=call_id):
            text = self._server.reject_arguments(self._tool, problem)
            self._record_outcome(self.name, "invalid_arguments")
        return text

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> BaseModel:
        raise NotImplementedError("called through run_json")

    def return_value_as_string(self, value: Any) -> str:
        return str(value)


def mcp_tools(
    server: McpServer, schemas: Sequence[ToolSchema], instrumentation: Instrumentation
) -> list[BaseTool[Any, Any]]:
    """`server`'s tools, as the agents' tools."""
    return [_McpTool(server, schema, instrumentation) for schema in schemas]


class _AwaitingApprovalTool(_JsonSafeFunctionTool):
    """What the model is offered for a tool that needs approval: the tool's own schema, but a
    call only pauses the turn (it is a handoff to the user); the tool runs once approved."""

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> str:
        return _AWAITING_APPROVAL


_AWAITING_APPROVAL = "This call waits for a person's approval."


def _ask_user(question: str) -> str:
    return question


class _BuiltHandoff(Handoff):
    """A handoff whose tool is built once, at start-up: AutoGen builds a new FunctionTool, about
    a millisecond, each time an agent is made with a plain handoff."""

    _tool: BaseTool[Any, Any] | None = PrivateAttr(default=None)

    @property
    def handoff_tool(self) -> BaseTool[Any, Any]:
        if self._tool is None:
            self._tool = super().handoff_tool
        return self._tool


def _handoff(target: str, tool: BaseTool[Any, Any] | None = None) -> _BuiltHandoff:
    """A handoff to `target`, with `tool` as the model sees it (by default AutoGen's own)."""
    if tool is None:
        handoff = _BuiltHandoff(target=target)
    else:
        handoff = _BuiltHandoff(target=target, name=tool.name, description=tool.description)
        handoff._tool = tool
    handoff.handoff_tool.schema  # noqa: B018 - built now, not in a request
    return handoff


_ASK_USER = FunctionTool(
    _ask_user,
    name="ask_user",
    description="Ask the user a question and end your turn until they answer. Use it only "
    "when you cannot go on without something that only the user knows.",
)


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


@dataclass(frozen=True)
class TurnInput:
    """What a turn starts from."""

    history: Sequence[ChatMessage]  # earlier messages, used when no saved state holds them
    newest: str | None  # the user's new message; None when the turn decides approvals
    state: SavedState | None  # the crew's state saved by the previous turn
    awaiting: Awaiting | None  # what that state waits for (`Crew.awaiting`)
    keep_state: bool  # whether the conversation keeps what the turn leaves (a session)
    approvals: Sequence[Approval] = ()


@dataclass(frozen=True)
class _Member:
    """One agent, as built at start-up: what every request's copy of it shares."""

    spec: AgentSpec
    system_message: str
    tools: tuple[BaseTool[Any, Any], ...]
    handoffs: tuple[_BuiltHandoff, ...]
    needs_approval: Mapping[str, _JsonSafeFunctionTool]
    editable: frozenset[str]  # the tools of `needs_approval` whose arguments an approver may edit
    history_budget: int


_SELECTOR_PROMPT = """You choose who speaks next in a team of agents that answers a user.

The agents:
{roles}

The conversation so far:
{history}

Choose the next speaker from {participants}. Answer with the name alone."""


def _team_preamble(name: str, names: Sequence[str]) -> str:
    # Teammates' messages reach an agent as user messages with a name: it must know its own.
    others = ", ".join(f"`{other}`" for other in names if other != name)
    return f"You are `{name}` in a team of agents with {others}, answering a user together.\n\n"


class Crew:
    """The agent or team the service runs, as built once per process from the team's spec.

    Each turn (`run`) builds its own AutoGen agents, model contexts and team from this:
    only the model client, the tools and the handoffs are shared between requests.
    """

    def __init__(
        self,
        spec: AgentOrTeam,
        *,
        settings: CoreSettings,
        instrumentation: Instrumentation,
        count_tokens: TokenCounter,
        budget_for: Callable[[str, int], int],
    ) -> None:
        # AutoGen's agent runtime, which every team turn starts, would trace each message it
        # delivers into the installed tracer provider: some 60 spans and a millisecond of CPU
        # a turn, in traces that have the agent, tool and model call spans already.
        os.environ.setdefault("AUTOGEN_DISABLE_RUNTIME_TRACING", "true")
        if isinstance(spec, TeamSpec):
            self.kind: str = spec.kind
            agents: Sequence[AgentSpec] = spec.agents
            self._replier = spec.replier
        else:
            if any(target != USER for target in spec.handoffs):
                raise ValueError(f"agent {spec.name!r}: a lone agent can hand off only to USER")
            self.kind, agents, self._replier = "single", [spec], spec.name
        self.names = tuple(agent.name for agent in agents)
        self._count = count_tokens
        self._instrumentation = instrumentation
        self._max_chars = settings.tool_result_max_chars
        self._limits = TurnLimits(
            max_tool_iterations=settings.agent_max_tool_iterations,
            team_max_messages=settings.team_max_messages,
            team_token_budget=settings.team_token_budget,
            team_turn_seconds=settings.team_turn_seconds,
        )
        self._budget_for = budget_for
        self._members = {agent.name: self._member(agent, settings, budget_for) for agent in agents}
        self.history_budget = min(m.history_budget for m in self._members.values())
        # Tools that only hand over (to an agent, to the user, or to an approver): the
        # handoff itself tells the turn's story, not their calls.
        self._handoff_tools = frozenset(
            h.name
            for member in self._members.values()
            for h in member.handoffs
            if h.name not in member.needs_approval
        )

    def _member(
        self, agent: AgentSpec, settings: CoreSettings, budget_for: Callable[[str, int], int]
    ) -> _Member:
        offered = agent.tools if settings.tools_enabled else ()
        names = [t.name for t in offered]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
        # Wrapped once here: wrapping costs about a millisecond per tool.
        built = {
            t.name: _JsonSafeFunctionTool(t, self._max_chars, self._instrumentation)
            for t in offered
        }
        needs_approval = {t.name: built[t.name] for t in offered if t.requires_approval}
        handoffs = [
            _handoff(USER, _ASK_USER) if target == USER else _handoff(target)
            for target in agent.handoffs
        ]
        handoffs += [
            _handoff(USER, _AwaitingApprovalTool(t, self._max_chars, self._instrumentation))
            for t in offered
            if t.requires_approval
        ]
        system_message = agent.system_prompt
        if self.kind != "single":
            system_message = _team_preamble(agent.name, self.names) + system_message
        tools = tuple(tool for name, tool in built.items() if name not in needs_approval)
        overhead = self._overhead(system_message, tools, handoffs)
        return _Member(
            spec=agent,
            system_message=system_message,
            tools=tools,
            handoffs=tuple(handoffs),
            needs_approval=needs_approval,
            editable=frozenset(t.name for t in offered if t.editable_arguments),
            history_budget=budget_for(agent.name, overhead),
        )

    def _overhead(
        self,
        system_message: str,
        tools: Sequence[BaseTool[Any, Any]],
        handoffs: Sequence[_BuiltHandoff],
    ) -> int:
        """Tokens every model call of an agent spends before the history."""
        schemas = [tool.schema for tool in tools] + [h.handoff_tool.schema for h in handoffs]
        return message_tokens(self._count, system_message) + sum(
            self._count(json.dumps(schema)) for schema in schemas
        )

    def add_tools(self, tools: Sequence[BaseTool[Any, Any]]) -> None:
        """Give every agent `tools` as well: tools found at start-up, an MCP server's say.

        A name an agent has already (a tool, a handoff, an agent it hands off to), or one
        given twice, is a `ValueError`: the model would be offered two tools of one name.
        """
        names = [tool.name for tool in tools]
        for tool_name in names:
            if names.count(tool_name) > 1:
                raise ValueError(f"two tools are named {tool_name!r}")
        for name, member in self._members.items():
            taken = {
                *(tool.name for tool in (*member.tools, *member.needs_approval.values())),
                *(handoff.name for handoff in member.handoffs),
                *(handoff.target for handoff in member.handoffs),
            }
            for tool_name in names:
                if tool_name in taken:
                    raise ValueError(f"agent {name!r} has a tool or handoff named {tool_name!r}")
            with_tools = (*member.tools, *tools)
            overhead = self._overhead(member.system_message, with_tools, member.handoffs)
            self._members[name] = replace(
                member, tools=with_tools, history_budget=self._budget_for(name, overhead)
            )
        self.history_budget = min(m.history_budget for m in self._members.values())

    @property
    def tool_descriptions(self) -> dict[str, str]:
        """What each tool of any agent does, by name, in name order."""
        every = [t for m in self._members.values() for t in [*m.tools, *m.needs_approval.values()]]
        return {t.name: t.description for t in sorted(every, key=lambda t: t.name)}

    @property
    def agent_descriptions(self) -> dict[str, str]:
        """What each agent that has a description does, by name, in the team's order."""
        specs = [member.spec for member in self._members.values()]
        return {spec.name: spec.description for spec in specs if spec.description}

    @property
    def tool_names(self) -> list[str]:
        return list(self.tool_descriptions)

    @property
    def approval_tool_names(self) -> list[str]:
        return sorted({name for m in self._members.values() for name in m.needs_approval})

    def awaiting(self, state: SavedState | None) -> Awaiting | None:
        """What a saved state waits for; `StateRefused` if this crew cannot go on from it."""
        if state is None:
            return None
        if state.kind != self.kind or state.agents != self.names:
            raise StateRefused(
                "session_team_changed",
                f"This session was saved by a different team ({state.kind} of "
                f"{', '.join(state.agents)}); this service runs a {self.kind} of "
                f"{', '.join(self.names)}. Start a new session, or delete this one.",
            )
        awaiting = state.awaiting
        if awaiting is None:
            return None
        if awaiting.agent not in self.names:
            # A handoff to an agent the team does not have: nobody could go on.
            raise _unreadable_state(f"it waits for an agent this team lacks, {awaiting.agent!r}")
        needs_approval = self._members[awaiting.agent].needs_approval
        for call in awaiting.calls if awaiting.kind == "approval" else ():
            if call.name not in needs_approval:
                raise _unreadable_state(
                    f"call {call.id!r} waits for approval, but {awaiting.agent!r} has no "
                    f"tool {call.name!r} that needs it"
                )
        return awaiting

    def accepts_edits(self, agent: str, tool: str) -> bool:
        """Whether an approver may change the arguments of `agent`'s calls of `tool`."""
        return tool in self._members[agent].editable

    async def run(
        self,
        turn: TurnInput,
        *,
        model_client: ChatCompletionClient,
        stream_text: bool,
        payload_logging: PayloadLogging,
        cancellation_token: CancellationToken,
    ) -> AsyncIterator[TurnEvent]:
        """Answer the turn on freshly built agents: yields tool calls as they start and end,
        text deltas when `stream_text` is set, and a `TurnResult` last."""
        record = _TurnRecord()
        _turn_record.set(record)
        awaiting = turn.awaiting
        resume_at = awaiting.agent if awaiting else None
        end = _TurnEnd(self._replier, self._limits, record)
        runner, contexts = self.build(
            model_client,
            history=() if turn.state else turn.history,
            end=end,
            resume_at=resume_at,
            stream_text=stream_text,
            payload_logging=payload_logging,
        )
        if turn.state is not None:
            await _load_state(runner, turn.state.autogen, self.names, resume_at)
        settled: list[InnerMessage] = []
        text = turn.newest
        if turn.approvals:
            assert awaiting is not None  # the service checked the decisions against it
            decided = self._decide(turn.approvals, awaiting, contexts, settled, cancellation_token)
            async for event in decided:
                yield event
            text = _decisions_text(turn.approvals, awaiting)
        assert text is not None
        task: TextMessage | HandoffMessage = TextMessage(content=text, source=USER)
        if self.kind == "swarm" and resume_at is not None:
            # A swarm goes on only from a handoff to one of its agents (autogen#5912).
            task = HandoffMessage(content=text, source=USER, target=resume_at)
        run = runner.run_stream(task=task, cancellation_token=cancellation_token)
        transcript = _Transcript(
            self._limits.max_tool_iterations,
            self._handoff_tools,
            settled,
            # The approved calls ran in this turn, before the agents.
            tool_calls=sum(approval.decision == "approve" for approval in turn.approvals),
        )
        with self._instrumentation.agent_run():
            try:
                async with aclosing(run) as items:
                    async for item in items:
                        if isinstance(item, TaskResult):
                            break
                        for event in transcript.add(item):
                            yield event
            except RuntimeError as error:
                # A team turns an agent's failure into a RuntimeError: answer with the original.
                if record.model_failure is not None:
                    raise record.model_failure from error
                raise
        yield await self._result(runner, transcript, end, record, keep_state=turn.keep_state)

    def build(
        self,
        model_client: ChatCompletionClient,
        *,
        history: Sequence[ChatMessage],
        end: "_TurnEnd | None" = None,
        resume_at: str | None = None,
        stream_text: bool = False,
        payload_logging: PayloadLogging = "off",
    ) -> tuple[
        AssistantAgent | RoundRobinGroupChat | SelectorGroupChat | Swarm,
        dict[str, "TurnTrimmingContext"],
    ]:
        """The AutoGen objects of one turn, new: the agents with their model contexts (holding
        `history`) and, for a team, the team. The benchmark times this."""
        contexts = {
            name: TurnTrimmingContext(
                [_history_message(m, name) for m in history],
                member.history_budget,
                self._count,
                payload_logging,
                self._instrumentation.history_trimmed,
            )
            for name, member in self._members.items()
        }
        agents = [
            _ServiceAgent(
                name=name,
                description=member.spec.description or f"The agent {name}.",
                model_client=model_client,
                workbench=_ToolWorkbench(member.tools),
                handoffs=list(member.handoffs),
                system_message=member.system_message,
                model_context=contexts[name],
                reflect_on_tool_use=True,
                max_tool_iterations=self._limits.max_tool_iterations,
                model_client_stream=stream_text,
            )
            for name, member in self._members.items()
        ]
        if self.kind == "single":
            return agents[0], contexts
        end = end or _TurnEnd(self._replier, self._limits, _TurnRecord())
        return self._team(agents, model_client, end, resume_at), contexts

    def _team(
        self,
        agents: list[AssistantAgent],
        model_client: ChatCompletionClient,
        end: "_TurnEnd",
        resume_at: str | None,
    ) -> RoundRobinGroupChat | SelectorGroupChat | Swarm:
        if self.kind == "round_robin":
            return RoundRobinGroupChat(agents, termination_condition=end)
        if self.kind == "swarm":
            return Swarm(agents, termination_condition=end)
        return SelectorGroupChat(
            agents,
            model_client=model_client,
            termination_condition=end,
            selector_prompt=_SELECTOR_PROMPT,
            # The agent that asked the user goes on; after it, the model chooses.
            selector_func=None if resume_at is None else _first_pick(resume_at),
            # The selector's own history, which it would otherwise keep whole.
            model_context=TurnTrimmingContext([], self.history_budget, self._count),
        )

    async def _decide(
        self,
        approvals: Sequence[Approval],
        awaiting: Awaiting,
        contexts: Mapping[str, "TurnTrimmingContext"],
        settled: list[InnerMessage],
        cancellation_token: CancellationToken,
    ) -> AsyncIterator[TurnEvent]:
        """Run the approved calls, refuse the rejected ones, and put both results where the
        asking agent's placeholders were."""
        member = self._members[awaiting.agent]
        calls = {call.id: call for call in awaiting.calls}
        results: dict[str, FunctionExecutionResult] = {}
        for approval in approvals:
            call = calls[approval.id]
            if approval.decision == "approve":
                arguments = approval.arguments or call.arguments
                yield ToolCallStarted(call.name, arguments, awaiting.agent)
                tool = member.needs_approval[call.name]
                problem = arguments_problem(arguments)
                content = (
                    tool.reject_arguments(f"arguments: {problem}", call.id)
                    if problem
                    else await tool.run_json(json.loads(arguments), cancellation_token, call.id)
                )
                failed = is_tool_error(content)
                yield ToolCallFinished(call.name, failed, awaiting.agent)
            else:
                reason = approval.reason or "A person declined to approve this call."
                content = tool_error_json(
                    "rejected", reason, retryable=False, max_chars=self._max_chars
                )
                failed = True
            results[call.id] = FunctionExecutionResult(
                content=content, name=call.name, call_id=call.id, is_error=failed
            )
            settled.append(
                InnerMessage(awaiting.agent, "tool_result", content, call.name, call.id, failed)
            )
        contexts[awaiting.agent].settle(results)

    async def _result(
        self,
        runner: AssistantAgent | RoundRobinGroupChat | SelectorGroupChat | Swarm,
        transcript: "_Transcript",
        end: "_TurnEnd",
        record: _TurnRecord,
        *,
        keep_state: bool,
    ) -> TurnResult:
        last = transcript.last_chat
        awaiting: Awaiting | None = None
        if isinstance(last, HandoffMessage) and last.target == USER:
            needs_approval = self._members[last.source].needs_approval
            pending = tuple(
                PendingCall(id=call.id, name=call.name, arguments=call.arguments)
                for call in transcript.last_calls.get(last.source, ())
                if call.name in needs_approval
            )
            awaiting = Awaiting(
                kind="approval" if pending else "input", agent=last.source, calls=pending
            )
        if awaiting is not None and awaiting.kind == "approval":
            stop_reason: StopReason = "awaiting_approval"
            reply = "Waiting for approval: " + ", ".join(c.name for c in awaiting.calls) + "."
        elif awaiting is not None:
            stop_reason, reply = "awaiting_input", last.to_text() if last else ""
        else:
            stop_reason = end.reason or transcript.reply_reason
            reply = transcript.reply
        state: SavedState | None = None
        needed = self.kind != "single" or (awaiting is not None and awaiting.kind == "approval")
        if keep_state and needed:
            saved = dict(await runner.save_state())
            if self.kind != "single":
                _trim_thread(saved, self._count, self.history_budget)
            state = SavedState(kind=self.kind, agents=self.names, autogen=saved, awaiting=awaiting)
        return TurnResult(
            reply=reply,
            stop_reason=stop_reason,
            messages=tuple(transcript.messages),
            pending=awaiting.calls if awaiting else (),
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            tool_calls=transcript.tool_calls,
            state=state,
        )


def _unreadable_state(problem: str) -> StateRefused:
    return StateRefused(
        "session_unreadable",
        f"This session's saved record cannot be read by this version of the service: {problem}. "
        "It is kept as it is until you DELETE the session (`DELETE /v1/sessions/{id}`), "
        "which starts it over.",
    )


def _history_message(message: ChatMessage, agent_name: str) -> LLMMessage:
    if message.role == "assistant":
        return AssistantMessage(content=message.content, source=agent_name)
    return UserMessage(content=message.content, source=USER)


def _decisions_text(approvals: Sequence[Approval], awaiting: Awaiting) -> str:
    names = {call.id: call.name for call in awaiting.calls}
    decided = [
        f"{names[a.id]} ({a.id}) {'approved' if a.decision == 'approve' else 'rejected'}"
        for a in approvals
    ]
    return "My decisions on the calls that waited for approval: " + "; ".join(decided) + "."


def _first_pick(name: str) -> Callable[[Sequence[Any]], str | None]:
    """A selector function that picks `name` once, then leaves the choice to the model."""
    picks = [name]

    def pick(_: Sequence[Any]) -> str | None:
        return picks.pop() if picks else None

    return pick


async def _load_state(
    runner: AssistantAgent | RoundRobinGroupChat | SelectorGroupChat | Swarm,
    saved: Mapping[str, Any],
    names: Sequence[str],
    resume_at: str | None,
) -> None:
    """Load a saved state; `StateRefused` if AutoGen cannot read it."""
    try:
        if resume_at is not None and isinstance(runner, RoundRobinGroupChat):
            # The agent that asked goes on, not the one after it.
            saved = json.loads(json.dumps(saved))
            for agent_state in saved["agent_states"].values():
                if agent_state.get("type") == "RoundRobinManagerState":
                    agent_state["next_speaker_index"] = list(names).index(resume_at)
        await runner.load_state(saved)
    # What AutoGen raises on a state of another shape (a pydantic error is a ValueError).
    except (LookupError, TypeError, ValueError, AttributeError) as error:
        log.warning("saved session state unreadable", error=f"{type(error).__name__}: {error}")
        raise _unreadable_state("AutoGen cannot load the agents' state") from error


def _trim_thread(state: dict[str, Any], count: TokenCounter, budget: int) -> None:
    """Keep a team manager's message thread within the history budget, by whole turns: the
    manager keeps every message of every turn, and the selector rebuilds its history from it."""
    for agent_state in state.get("agent_states", {}).values():
        thread = agent_state.get("message_thread")
        if not thread:
            continue
        costs = [message_tokens(count, json.dumps(message.get("content"))) for message in thread]
        starts_turn = [message.get("source") == USER for message in thread]
        agent_state["message_thread"] = thread[
            trim_to_budget(costs, starts_turn, budget).first_kept :
        ]


class _TurnEnd(TerminationCondition):
    """Ends a team's turn, and keeps why: a reply, a question or approval for the user, or a
    limit. AutoGen resets a condition once it fired; `reason` stays for the result."""

    def __init__(self, replier: str | None, limits: TurnLimits, record: _TurnRecord) -> None:
        self._replier = replier
        self._limits = limits
        self._record = record
        self._deadline = time.monotonic() + limits.team_turn_seconds
        self._messages = 0
        self._stopped = False
        self.reason: StopReason | None = None

    @property
    def terminated(self) -> bool:
        return self._stopped

    async def __call__(
        self, messages: Sequence[BaseAgentEvent | BaseChatMessage]
    ) -> StopMessage | None:
        if self._stopped:
            raise TerminatedException("the turn has already ended")
        reason: StopReason | None = None
        agents_spoke = False
        for message in messages:
            if not isinstance(message, BaseChatMessage):
                continue
            self._messages += 1
            agents_spoke = agents_spoke or message.source != USER
            if isinstance(message, HandoffMessage):
                if message.target == USER:
                    reason = "awaiting_input"  # the result tells input from approval
            elif (
                isinstance(message, BaseTextChatMessage)
                and message.source != USER
                and self._replier in (None, message.source)
            ):
                reason = "reply"
        if reason is None and agents_spoke:  # a limit never ends a turn before it starts
            record = self._record
            if self._messages >= self._limits.team_max_messages:
                reason = "max_messages"
            elif record.prompt_tokens + record.completion_tokens >= self._limits.team_token_budget:
                reason = "token_budget"
            elif time.monotonic() >= self._deadline:
                reason = "deadline"
        if reason is None:
            return None
        self._stopped = True
        if reason not in ("reply", "awaiting_input"):
            self.reason = reason
        return StopMessage(content=reason, source="turn_end")

    async def reset(self) -> None:
        self._stopped = False


class _Transcript:
    """The turn's messages as they come, and what its end is read from."""

    def __init__(
        self,
        max_tool_iterations: int,
        handoff_tools: frozenset[str],
        settled: list[InnerMessage],
        tool_calls: int,
    ) -> None:
        self._max_rounds = max_tool_iterations
        self._handoff_tools = handoff_tools
        self.messages = settled
        self.tool_calls = tool_calls
        self.last_chat: BaseChatMessage | None = None
        self.last_calls: dict[str, list[FunctionCall]] = {}
        self.reply = ""
        self.reply_reason: StopReason = "reply"
        self._rounds: dict[str, int] = {}

    def add(self, item: BaseAgentEvent | BaseChatMessage) -> list[TurnEvent]:
        source = item.source
        if isinstance(item, ModelClientStreamingChunkEvent):
            return [TextDelta(item.content, source)]
        if source == USER:
            return []  # the task, as given
        if isinstance(item, ToolCallRequestEvent):
            self.last_calls[source] = list(item.content)
            self._rounds[source] = self._rounds.get(source, 0) + 1
            calls = [call for call in item.content if call.name not in self._handoff_tools]
            self.tool_calls += len(calls)
            for call in calls:
                self.messages.append(
                    InnerMessage(source, "tool_call", call.arguments, call.name, call.id)
                )
            return [ToolCallStarted(call.name, call.arguments, source) for call in calls]
        if isinstance(item, ToolCallExecutionEvent):
            events: list[TurnEvent] = []
            for result in item.content:
                if result.name in self._handoff_tools or result.content == _AWAITING_APPROVAL:
                    continue
                # Our tools answer errors as JSON; AutoGen flags only what it caught itself.
                failed = result.is_error or is_tool_error(result.content)
                self.messages.append(
                    InnerMessage(
                        source, "tool_result", result.content, result.name, result.call_id, failed
                    )
                )
                events.append(ToolCallFinished(result.name, bool(failed), source))
            return events
        if isinstance(item, HandoffMessage):
            self.last_chat = item
            self.messages.append(InnerMessage(source, "handoff", item.content, item.target))
        elif isinstance(item, BaseTextChatMessage):
            self.last_chat = item
            self.reply = item.content
            # Past its last tool round an agent must answer: its reply was forced.
            forced = self._rounds.get(source, 0) >= self._max_rounds
            self.reply_reason = "max_tool_rounds" if forced else "reply"
            self.messages.append(InnerMessage(source, "text", item.content))
        if isinstance(item, BaseChatMessage):
            self._rounds[source] = 0
        return []


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
