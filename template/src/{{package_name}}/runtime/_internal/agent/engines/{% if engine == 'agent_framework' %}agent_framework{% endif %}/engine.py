"""A lone agent on Microsoft Agent Framework.

Split by lifetime as on any engine: the model client, its middleware and the tools are
built once per process; the `RawAgent`, its session and the compaction of its history are
built for one turn and dropped with it. A turn paused for approval keeps the agent's
session (`AgentSession.to_dict()`) in the saved state; any other turn goes on from the
conversation's transcript.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

import openai
from agent_framework import (
    AgentSession,
    Content,
    InMemoryHistoryProvider,
    Message,
    RawAgent,
)
from agent_framework.exceptions import ChatClientException
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from ....contract import ChatMessage
from ....settings import CoreSettings
from ...approvals import Decided, decide, decisions_text
from ...engine import EngineFeatures, LineupEngine
from ...instrumentation import Instrumentation
from ...lineup import Lineup, unreadable_state
from ...mcp_client import McpServer, McpToolSchema
from ...specs import USER, AgentOrTeam
from ...tokens import TokenCounter
from ...transcript import Transcript, turn_result
from ...turn import (
    InnerMessage,
    TurnEvent,
    TurnInput,
    TurnResult,
    TurnUsage,
    UnusableAnswer,
    current_usage,
)
from ...upstream import CallGuard, upstream_options
from .client import ServiceChatClient, build_client
from .compaction import TurnSafeCompaction
from .state import TurnState, current_turn
from .tools import (
    ASK_USER,
    ASK_USER_TOOL,
    McpFunctionTool,
    ServiceFunctionTool,
    ToolCalls,
    tool_span,
)

NAME = "agent_framework"
_HISTORY = InMemoryHistoryProvider.DEFAULT_SOURCE_ID
_tracer = trace.get_tracer(__name__)

FEATURES = EngineFeatures(
    # Agent Framework logs tool arguments and results, and the model's errors, which can
    # quote what it was sent: personal data.
    content_loggers=("agent_framework",),
    quiet_loggers=(),
    team_kinds=frozenset({"single"}),
)


class Engine(LineupEngine):
    """The service's agent, as built once per process from its spec."""

    name = NAME
    features = FEATURES

    def __init__(
        self,
        spec: AgentOrTeam,
        *,
        settings: CoreSettings,
        instrumentation: Instrumentation,
        count_tokens: TokenCounter,
        budget_for: Callable[[str, int], int],
        call_guard: CallGuard | None = None,
    ) -> None:
        super().__init__(
            Lineup(spec, settings=settings, count_tokens=count_tokens, budget_for=budget_for)
        )
        [self._agent] = self.names
        self._member = self.lineup.members[self._agent]
        self._settings = settings
        self._instrumentation = instrumentation
        self._call_guard = call_guard
        self._count = count_tokens
        self._max_chars = settings.tool_result_max_chars
        # Wrapped once here: a tool's schema is inferred from its function.
        self._tools: dict[str, ServiceFunctionTool | McpFunctionTool] = {
            t.name: ServiceFunctionTool(t, self._max_chars, instrumentation)
            for t in (*self._member.tools, *self._member.needs_approval.values())
        }
        self._offered = [*self._tools.values()]
        if USER in self._member.spec.handoffs:
            self._offered.append(ASK_USER_TOOL)
        self.lineup.set_budgets(lambda _: [t.to_json_schema_spec() for t in self._offered])
        self._client: ServiceChatClient | None = None
        self._max_tokens: int | None = None

    def add_tools(self, server: McpServer, schemas: Sequence[McpToolSchema]) -> None:
        handoffs = [ASK_USER] if ASK_USER_TOOL in self._offered else []
        added = self.lineup.add_mcp_tools(server, schemas, lambda _: handoffs)
        for tool in added:
            self._tools[tool.name] = built = McpFunctionTool(tool, self._instrumentation)
            self._offered.append(built)
        self.lineup.set_budgets(lambda _: [t.to_json_schema_spec() for t in self._offered])

    async def start(self) -> None:
        upstream = upstream_options(self._settings, self._instrumentation, self._call_guard)
        self._client = build_client(
            upstream,
            self._instrumentation,
            max_tool_iterations=self.lineup.limits.max_tool_iterations,
            middleware=[ToolCalls()],
        )
        self._max_tokens = upstream.max_tokens

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.client.close()
            self._client = None

    def upstream_cause(self, error: BaseException) -> BaseException | None:
        if isinstance(error, openai.OpenAIError | json.JSONDecodeError | UnusableAnswer):
            return error
        if isinstance(error, ChatClientException):
            cause = error.__cause__
            if isinstance(cause, openai.OpenAIError | json.JSONDecodeError):
                return cause
            # The SDK answered, but with nothing the client could read as a completion.
            return UnusableAnswer(str(error))
        return None

    async def complete(self, instructions: str, text: str) -> str:
        response = await self._agent_for_turn(instructions=instructions, tools=[]).run(text)
        return response.text

    def _agent_for_turn(self, *, instructions: str, tools: Sequence[Any]) -> RawAgent[Any]:
        assert self._client is not None, "Engine.start() makes the model client"
        options: dict[str, Any] = {}
        if self._max_tokens is not None:
            # As `max_tokens`, which the setting names and every OpenAI-compatible server
            # reads: Agent Framework would send its option as `max_completion_tokens`.
            options["extra_body"] = {"max_tokens": self._max_tokens}
        return RawAgent(
            client=self._client,
            name=self._agent,
            instructions=instructions,
            tools=list(tools),
            default_options=options,  # type: ignore[arg-type]
            context_providers=[InMemoryHistoryProvider(skip_excluded=True)],
            compaction_strategy=TurnSafeCompaction(
                self._member.history_budget, self._count, self._instrumentation.history_trimmed
            ),
        )

    async def run(self, turn: TurnInput, *, stream_text: bool) -> AsyncIterator[TurnEvent]:
        usage = TurnUsage()
        current_usage.set(usage)
        session, messages = self._session(turn)
        settled: list[InnerMessage] = []
        text = turn.newest
        if turn.approvals:
            assert turn.awaiting is not None  # the service checked the decisions against it
            decided: dict[str, Decided] = {}
            async for event in decide(
                turn.approvals,
                turn.awaiting,
                run=self._run_approved,
                refuse=self._refuse,
                max_chars=self._max_chars,
                settled=settled,
                results=decided,
            ):
                yield event
            _settle(session, decided)
            text = decisions_text(turn.approvals, turn.awaiting)
        assert text is not None
        transcript = Transcript(
            self.lineup.limits.max_tool_iterations,
            frozenset({ASK_USER}),
            settled,
            # The approved calls ran in this turn, before the agent.
            tool_calls=sum(approval.decision == "approve" for approval in turn.approvals),
        )
        events: asyncio.Queue[TurnEvent] = asyncio.Queue()
        current_turn.set(
            TurnState(
                agent=self._agent,
                member=self._member,
                transcript=transcript,
                emit=events.put_nowait,
                payload_logging=self._settings.payload_logging,
            )
        )
        agent = self._agent_for_turn(instructions=self._member.system_message, tools=self._offered)
        messages.append(Message(role="user", contents=[Content.from_text(text)]))
        with (
            self._instrumentation.agent_run(),
            _tracer.start_as_current_span(
                f"invoke_agent {self._agent}",
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": self._agent,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
        ):
            answering = asyncio.create_task(
                self._answer(agent, messages, session, transcript, stream_text, events)
            )
            waiting: asyncio.Future[TurnEvent] | None = None
            try:
                while True:
                    waiting = asyncio.ensure_future(events.get())
                    await asyncio.wait({waiting, answering}, return_when=asyncio.FIRST_COMPLETED)
                    if waiting.done():
                        yield waiting.result()
                        continue
                    waiting.cancel()
                    while not events.empty():
                        yield events.get_nowait()
                    break
                answering.result()  # its failure, if it failed
            except Exception as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                span.set_attribute("error.type", type(error).__name__)
                raise
            finally:
                if waiting is not None:
                    waiting.cancel()  # a run stopped while waiting for the next event
                if not answering.done():
                    answering.cancel()
                    with suppress(asyncio.CancelledError):
                        await answering
        yield await self._result(transcript, session, usage, keep_state=turn.keep_state)

    async def _answer(
        self,
        agent: RawAgent[Any],
        messages: list[Message],
        session: AgentSession,
        transcript: Transcript,
        stream_text: bool,
        events: "asyncio.Queue[TurnEvent]",
    ) -> None:
        """Run the agent: its tool calls tell the transcript as they happen (`ToolCalls`),
        its text at the end, and as it streams when `stream_text` is set."""
        if stream_text:
            stream = agent.run(messages, session=session, stream=True)
            async for update in stream:
                if update.text:
                    for event in transcript.text_delta(self._agent, update.text):
                        events.put_nowait(event)
            response = await stream.get_final_response()
        else:
            response = await agent.run(messages, session=session)
        if transcript.last_chat is not None and transcript.last_chat.type == "handoff":
            return  # the turn ended with a question or a call waiting for approval
        final = response.messages[-1] if response.messages else None
        if final is not None and final.role == "assistant" and final.text:
            transcript.text(self._agent, final.text)

    async def _result(
        self, transcript: Transcript, session: AgentSession, usage: TurnUsage, *, keep_state: bool
    ) -> TurnResult:
        async def save_state() -> dict[str, Any]:
            return session.to_dict()

        return await turn_result(
            transcript,
            self.lineup,
            engine=NAME,
            limit_reason=None,
            usage=usage,
            keep_state=keep_state,
            save_state=save_state,
        )

    def _session(self, turn: TurnInput) -> tuple[AgentSession, list[Message]]:
        """The agent's session, restored from a saved state, and the messages to run it with:
        the transcript's when no state holds the conversation."""
        if turn.state is not None:
            try:
                session = AgentSession.from_dict(turn.state.engine_state)
                stored = session.state[_HISTORY]["messages"]
                if not all(isinstance(message, Message) for message in stored):
                    raise TypeError("a stored message is no message")
            # What Agent Framework raises on a session of another shape.
            except (LookupError, TypeError, ValueError, AttributeError) as error:
                raise unreadable_state("Agent Framework cannot load the agent's session") from error
            return session, []
        return AgentSession(), [_history_message(message) for message in turn.history]

    async def _run_approved(self, name: str, arguments: Mapping[str, Any], call_id: str) -> str:
        tool = self._tools[name]
        with tool_span(tool, call_id):
            return await tool.answer(arguments)

    def _refuse(self, name: str, problem: str, call_id: str) -> str:
        tool = self._tools[name]
        with tool_span(tool, call_id):
            return tool.refuse(problem)


def _history_message(message: ChatMessage) -> Message:
    role = "assistant" if message.role == "assistant" else "user"
    return Message(role=role, contents=[Content.from_text(message.content)])


def _settle(session: AgentSession, decided: Mapping[str, Decided]) -> None:
    """Put the results of the calls that waited for approval where their placeholders were."""
    for message in session.state[_HISTORY]["messages"]:
        message.contents = [
            Content.from_function_result(
                call_id=content.call_id, result=decided[content.call_id].content
            )
            if content.type == "function_result" and content.call_id in decided
            else content
            for content in message.contents
        ]
