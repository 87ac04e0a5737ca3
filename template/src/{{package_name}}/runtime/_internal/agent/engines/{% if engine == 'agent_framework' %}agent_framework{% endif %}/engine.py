"""A lone agent or a team on Microsoft Agent Framework.

Split by lifetime as on any engine: the model client, its middleware and the tools are
built once per process; the `RawAgent`s, their sessions, the compaction of their histories
and a team's workflow are built for one turn and dropped with it. A lone agent's turn
paused for approval keeps the agent's session (`AgentSession.to_dict()`) in the saved
state; any other lone agent's turn goes on from the conversation's transcript. A team
keeps its state in every session (`team.py`).
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from contextvars import ContextVar
from typing import Any

import openai
from agent_framework import (
    AgentSession,
    Content,
    FunctionTool,
    InMemoryHistoryProvider,
    Message,
    RawAgent,
)
from agent_framework.exceptions import ChatClientException
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from ....settings import CoreSettings
from ...approvals import Decided, calls_run, decide, decisions_text
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
    with_context,
)
from ...upstream import CallGuard, upstream_options
from .client import (
    HISTORY_SOURCE,
    ServiceChatClient,
    build_client,
    history_message,
    transcript_session,
)
from .compaction import TurnSafeCompaction
from .state import TurnState, current_turn, events_while
from .team import TEAM_KINDS, TeamAgent, TeamTurn
from .tools import (
    ASK_USER,
    ASK_USER_TOOL,
    HANDOFF_PREFIX,
    McpFunctionTool,
    ServiceFunctionTool,
    ToolCalls,
    frontend_tools,
    handoff_tool,
    tool_span,
)

NAME = "agent_framework"
# A team turn's frontend tools and context, for `team_agent`, which the team's turn calls.
_frontend: ContextVar[tuple[Sequence[FunctionTool], str]] = ContextVar(
    "agent_framework_frontend", default=((), "")
)
_tracer = trace.get_tracer(__name__)

FEATURES = EngineFeatures(
    # Agent Framework logs tool arguments and results, and the model's errors, which can
    # quote what it was sent: personal data.
    content_loggers=("agent_framework",),
    quiet_loggers=(),
    team_kinds=frozenset({"single", *TEAM_KINDS}),
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
        self._agent = self.names[0]  # a lone agent's name
        self.settings = settings
        self.instrumentation = instrumentation
        self._call_guard = call_guard
        self.count_tokens = count_tokens
        self._max_chars = settings.tool_result_max_chars
        # Each agent's own, wrapped once here: a tool's schema is inferred from its function.
        self._tools: dict[str, dict[str, ServiceFunctionTool | McpFunctionTool]] = {
            name: {
                t.name: ServiceFunctionTool(t, self._max_chars, instrumentation)
                for t in (*member.tools, *member.needs_approval.values())
            }
            for name, member in self.lineup.members.items()
        }
        self._offered: dict[str, list[FunctionTool]] = {
            name: [*tools.values()] for name, tools in self._tools.items()
        }
        for name, member in self.lineup.members.items():
            self._offered[name] += [
                ASK_USER_TOOL if target == USER else handoff_tool(target)
                for target in member.spec.handoffs
            ]
        self.lineup.set_budgets(self._schemas)
        # Tools that only hand over (to an agent, to the user): the handoff tells the story.
        self._handoff_tools = frozenset(
            ASK_USER if target == USER else HANDOFF_PREFIX + target
            for member in self.lineup.members.values()
            for target in member.spec.handoffs
        ) | {ASK_USER}
        self._client: ServiceChatClient | None = None
        self._max_tokens: int | None = None

    def _schemas(self, agent: str) -> list[Any]:
        """What every model call of `agent` is sent besides its messages: its tools."""
        return [tool.to_json_schema_spec() for tool in self._offered[agent]]

    @property
    def tool_names(self) -> frozenset[str]:
        return frozenset(tool.name for tools in self._offered.values() for tool in tools)

    def add_tools(self, server: McpServer, schemas: Sequence[McpToolSchema]) -> None:
        def handoffs(agent: str) -> list[str]:
            handoffs = self.lineup.members[agent].spec.handoffs
            return [ASK_USER if target == USER else HANDOFF_PREFIX + target for target in handoffs]

        added = self.lineup.add_mcp_tools(server, schemas, handoffs)
        for name in self.names:
            for tool in added:
                self._tools[name][tool.name] = built = McpFunctionTool(tool, self.instrumentation)
                self._offered[name].append(built)
        self.lineup.set_budgets(self._schemas)

    async def start(self) -> None:
        upstream = upstream_options(self.settings, self.instrumentation, self._call_guard)
        self._client = build_client(
            upstream,
            self.instrumentation,
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
        response = await self._agent_for_turn(self._agent, instructions, tools=[]).run(text)
        return response.text

    async def answer(self, messages: Sequence[Message]) -> str:
        """One model call outside any agent, of the turn under way (a selector's choice)."""
        assert self._client is not None, "Engine.start() makes the model client"
        options: dict[str, Any] = {}
        if self._max_tokens is not None:
            options["extra_body"] = {"max_tokens": self._max_tokens}
        response = await self._client.get_response(list(messages), options=options)  # type: ignore[arg-type]
        return response.text

    def _agent_for_turn(
        self, name: str, instructions: str, *, tools: Sequence[Any], team: bool = False
    ) -> RawAgent[Any]:
        assert self._client is not None, "Engine.start() makes the model client"
        options: dict[str, Any] = {}
        if self._max_tokens is not None:
            # As `max_tokens`, which the setting names and every OpenAI-compatible server
            # reads: Agent Framework would send its option as `max_completion_tokens`.
            options["extra_body"] = {"max_tokens": self._max_tokens}
        return (TeamAgent if team else RawAgent)(
            client=self._client,
            name=name,
            description=self.lineup.members[name].spec.description or f"The agent {name}.",
            instructions=instructions,
            tools=list(tools),
            default_options=options,  # type: ignore[arg-type]
            context_providers=[InMemoryHistoryProvider(skip_excluded=True)],
            compaction_strategy=TurnSafeCompaction(
                self.lineup.members[name].history_budget,
                self.count_tokens,
                self.instrumentation.history_trimmed,
            ),
        )

    def team_agent(self, name: str) -> RawAgent[Any]:
        """A new agent of the team, for one turn."""
        member = self.lineup.members[name]
        frontend, context = _frontend.get()
        return self._agent_for_turn(
            name,
            with_context(member.system_message, context),
            tools=[*self._offered[name], *frontend],
            team=True,
        )

    async def decide(
        self,
        turn: TurnInput,
        settled: list[InnerMessage],
        session_of: Callable[[str], AgentSession],
    ) -> AsyncIterator[TurnEvent]:
        """Run or refuse the calls that waited for approval, and put their results where
        the asking agent's placeholders were (in `session_of(agent)`)."""
        awaiting = turn.awaiting
        assert awaiting is not None  # the service checked the decisions against it
        tools = self._tools[awaiting.agent]

        async def run_approved(name: str, arguments: Mapping[str, Any], call_id: str) -> str:
            with tool_span(tools[name], call_id):
                return await tools[name].answer(arguments)

        def refuse(name: str, problem: str, call_id: str) -> str:
            with tool_span(tools[name], call_id):
                return tools[name].refuse(problem)

        decided: dict[str, Decided] = {}
        async for event in decide(
            turn.approvals,
            awaiting,
            run=run_approved,
            refuse=refuse,
            max_chars=self._max_chars,
            settled=settled,
            results=decided,
        ):
            yield event
        _settle(session_of(awaiting.agent), decided)

    def transcript(self, turn: TurnInput, settled: list[InnerMessage]) -> Transcript:
        return Transcript(
            self.lineup.limits.max_tool_iterations,
            self._handoff_tools,
            settled,
            # The approved calls ran in this turn, before the agents.
            tool_calls=calls_run(turn.approvals),
        )

    def run(self, turn: TurnInput, *, stream_text: bool) -> AsyncIterator[TurnEvent]:
        if self.kind == "single":
            return self._run_alone(turn, stream_text)
        return self._run_team(turn, stream_text)

    async def _run_team(self, turn: TurnInput, stream_text: bool) -> AsyncIterator[TurnEvent]:
        _frontend.set((frontend_tools(turn.frontend_tools), turn.context))
        async with aclosing(TeamTurn(self, turn, stream_text).run()) as events:
            async for event in events:
                yield event

    async def _run_alone(self, turn: TurnInput, stream_text: bool) -> AsyncIterator[TurnEvent]:
        usage = TurnUsage()
        current_usage.set(usage)
        session, messages = self._session(turn)
        settled: list[InnerMessage] = []
        text = turn.newest
        if turn.approvals:
            async for event in self.decide(turn, settled, lambda _: session):
                yield event
            assert turn.awaiting is not None
            text = decisions_text(turn.approvals, turn.awaiting)
        assert text is not None
        transcript = self.transcript(turn, settled)
        events: asyncio.Queue[TurnEvent] = asyncio.Queue()
        member = self.lineup.members[self._agent]
        state = TurnState(
            agent=self._agent,
            member=member,
            transcript=transcript,
            emit=events.put_nowait,
            payload_logging=self.settings.payload_logging,
        )
        current_turn.set(state)
        agent = self._agent_for_turn(
            self._agent,
            with_context(member.system_message, turn.context),
            tools=[*self._offered[self._agent], *frontend_tools(turn.frontend_tools)],
        )
        messages.append(Message(role="user", contents=[Content.from_text(text)]))
        with (
            self.instrumentation.agent_run(),
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
            try:
                answering = self._answer(agent, messages, session, state, stream_text, events)
                async for event in events_while(answering, events):
                    yield event
            except Exception as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                span.set_attribute("error.type", type(error).__name__)
                raise
        yield await self._result(transcript, session, usage, keep_state=turn.keep_state)

    async def _answer(
        self,
        agent: RawAgent[Any],
        messages: list[Message],
        session: AgentSession,
        state: TurnState,
        stream_text: bool,
        events: "asyncio.Queue[TurnEvent]",
    ) -> None:
        """Run the agent: its tool calls tell the transcript as they happen (`ToolCalls`),
        its text at the end, and as it streams when `stream_text` is set."""
        transcript = state.transcript
        if stream_text:
            stream = agent.run(messages, session=session, stream=True)
            async for update in stream:
                if update.text:
                    for event in transcript.text_delta(self._agent, update.text):
                        events.put_nowait(event)
            response = await stream.get_final_response()
        else:
            response = await agent.run(messages, session=session)
        if state.run_ended():
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
                stored = session.state[HISTORY_SOURCE]["messages"]
                if not all(isinstance(message, Message) for message in stored):
                    raise TypeError("a stored message is no message")
            # What Agent Framework raises on a session of another shape.
            except (LookupError, TypeError, ValueError, AttributeError) as error:
                raise unreadable_state("Agent Framework cannot load the agent's session") from error
            return session, []
        if turn.awaiting is None or turn.awaiting.kind == "input":
            return AgentSession(), [history_message(message) for message in turn.history]
        # Paused by the other engine: its calls, as this engine would have kept them.
        return transcript_session(turn.history, turn.awaiting.calls), []


def _settle(session: AgentSession, decided: Mapping[str, Decided]) -> None:
    """Put the results of the calls that waited for approval where their placeholders were."""
    for message in session.state[HISTORY_SOURCE]["messages"]:
        message.contents = [
            Content.from_function_result(
                call_id=content.call_id, result=decided[content.call_id].content
            )
            if content.type == "function_result" and content.call_id in decided
            else content
            for content in message.contents
        ]
