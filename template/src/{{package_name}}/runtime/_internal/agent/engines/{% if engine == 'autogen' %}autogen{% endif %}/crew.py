"""The AutoGen engine: AutoGen's agents and teams for every turn, built from the lineup.

AutoGen objects are split by lifetime: the model client, the tools and the handoffs are
built once per process; agents, their model contexts and a team are built for one turn and
dropped with it, because AutoGen agents and teams keep the conversation they ran.
"""

import json
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import openai
import structlog
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult, TerminatedException, TerminationCondition
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
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    UserMessage,
)
from autogen_core.tools import BaseTool

from ....contract import ChatMessage, StopReason
from ....settings import CoreSettings
from ...approvals import Decided, calls_run, decide, decisions_text
from ...engine import EngineFeatures, LineupEngine
from ...history import trim_to_budget
from ...instrumentation import Instrumentation
from ...lineup import Lineup, Member, unreadable_state
from ...mcp_client import McpServer, McpToolSchema
from ...specs import USER, AgentOrTeam
from ...tokens import TokenCounter, message_tokens
from ...transcript import Call, CallResult, Posted, Transcript, TurnEnd, turn_result
from ...turn import (
    InnerMessage,
    TurnEvent,
    TurnInput,
    TurnUsage,
    UnusableAnswer,
    current_usage,
    with_context,
)
from ...upstream import CallGuard, upstream_options
from .client import build_model_client, complete
from .context import TurnTrimmingContext
from .tools import (
    ASK_USER,
    AwaitingApprovalTool,
    BuiltHandoff,
    JsonSafeFunctionTool,
    McpAgentTool,
    ServiceAgent,
    ToolWorkbench,
    frontend_handoffs,
    handoff,
)

log = structlog.get_logger(__name__)

FEATURES = EngineFeatures(
    # AutoGen's event loggers carry whole prompts and model replies: personal data.
    content_loggers=("autogen_core.events", "autogen_agentchat.events"),
    # AutoGen's agent runtime, which runs teams, logs each message it delivers at INFO,
    # contents included: a dozen lines of personal data per team turn.
    quiet_loggers=("autogen_core",),
    team_kinds=frozenset({"single", "round_robin", "selector", "swarm"}),
)

Runner = AssistantAgent | RoundRobinGroupChat | SelectorGroupChat | Swarm

_SELECTOR_PROMPT = """You choose who speaks next in a team of agents that answers a user.

The agents:
{roles}

The conversation so far:
{history}

Choose the next speaker from {participants}. Answer with the name alone."""


@dataclass(frozen=True)
class _Built:
    """One agent's AutoGen tools and handoffs, built once: wrapping costs about a
    millisecond per tool."""

    tools: tuple[BaseTool[Any, Any], ...]
    handoffs: tuple[BuiltHandoff, ...]
    needs_approval: Mapping[str, JsonSafeFunctionTool]


class AutoGenEngine(LineupEngine):
    """The lone agent or team the service runs, on AutoGen. Each turn (`run`) builds its own
    AutoGen agents, model contexts and team: only the model client, the tools and the
    handoffs are shared between turns."""

    name = "autogen"
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
        # AutoGen's agent runtime, which every team turn starts, would trace each message it
        # delivers into the installed tracer provider: some 60 spans and a millisecond of CPU
        # a turn, in traces that have the agent, tool and model call spans already.
        os.environ.setdefault("AUTOGEN_DISABLE_RUNTIME_TRACING", "true")
        super().__init__(
            Lineup(spec, settings=settings, count_tokens=count_tokens, budget_for=budget_for)
        )
        self._settings = settings
        self._count = count_tokens
        self._instrumentation = instrumentation
        self._call_guard = call_guard
        self._max_chars = settings.tool_result_max_chars
        self._built = {name: self._build(member) for name, member in self.lineup.members.items()}
        self.lineup.set_budgets(self._schemas)
        # Tools that only hand over (to an agent, to the user, or to an approver): the
        # handoff itself tells the turn's story, not their calls.
        self._handoff_tools = frozenset(
            h.name
            for built in self._built.values()
            for h in built.handoffs
            if h.name not in built.needs_approval
        )
        self._model_client: ChatCompletionClient | None = None

    def _build(self, member: Member) -> _Built:
        wrap = self._wrap
        needs_approval = {name: wrap(tool) for name, tool in member.needs_approval.items()}
        handoffs = [
            handoff(USER, ASK_USER) if target == USER else handoff(target)
            for target in member.spec.handoffs
        ]
        handoffs += [
            handoff(USER, AwaitingApprovalTool(t, self._max_chars, self._instrumentation))
            for t in member.needs_approval.values()
        ]
        return _Built(
            tools=tuple(wrap(tool) for tool in member.tools),
            handoffs=tuple(handoffs),
            needs_approval=needs_approval,
        )

    def _wrap(self, tool: Any) -> JsonSafeFunctionTool:
        return JsonSafeFunctionTool(tool, self._max_chars, self._instrumentation)

    def _schemas(self, agent: str) -> list[Any]:
        """What every model call of `agent` is sent besides its messages: its tools."""
        built = self._built[agent]
        return [tool.schema for tool in built.tools] + [
            h.handoff_tool.schema for h in built.handoffs
        ]

    @property
    def tool_names(self) -> frozenset[str]:
        return frozenset(
            tool.name
            for built in self._built.values()
            for tool in (*built.tools, *(h.handoff_tool for h in built.handoffs))
        )

    def add_tools(self, server: McpServer, schemas: Sequence[McpToolSchema]) -> None:
        def handoff_names(agent: str) -> list[str]:
            return [h.name for h in self._built[agent].handoffs]

        added = self.lineup.add_mcp_tools(server, schemas, handoff_names)
        tools = tuple(McpAgentTool(tool, self._instrumentation) for tool in added)
        for name, built in self._built.items():
            self._built[name] = _Built(
                tools=(*built.tools, *tools),
                handoffs=built.handoffs,
                needs_approval=built.needs_approval,
            )
        self.lineup.set_budgets(self._schemas)

    async def start(self) -> None:
        # Made here, not at import: a client bound to another event loop fails later.
        upstream = upstream_options(self._settings, self._instrumentation, self._call_guard)
        self._model_client = build_model_client(upstream, self._instrumentation)

    async def aclose(self) -> None:
        if self._model_client is not None:
            await self._model_client.close()
            self._model_client = None

    @property
    def model_client(self) -> ChatCompletionClient:
        assert self._model_client is not None, "the engine is not started"
        return self._model_client

    async def complete(self, instructions: str, text: str) -> str:
        return await complete(self.model_client, instructions, text)

    def upstream_cause(self, error: BaseException) -> BaseException | None:
        if isinstance(error, openai.OpenAIError | json.JSONDecodeError):
            return error
        if _raised_by_framework(error):
            # AutoGen or the SDK failing on an answer it cannot use: empty choices, a body
            # that is not a completion, tool calls past the iteration limit.
            return UnusableAnswer(str(error))
        return None

    async def run(self, turn: TurnInput, *, stream_text: bool) -> AsyncIterator[TurnEvent]:
        # One per turn: a reused token keeps every callback ever linked to it.
        token = CancellationToken()
        try:
            async with aclosing(self._run(turn, stream_text, token)) as events:
                async for event in events:
                    yield event
        except BaseException:
            token.cancel()  # the model call or tool under way, which the task's cancel misses
            raise

    async def _run(
        self, turn: TurnInput, stream_text: bool, token: CancellationToken
    ) -> AsyncIterator[TurnEvent]:
        usage = TurnUsage()
        current_usage.set(usage)
        awaiting = turn.awaiting
        resume_at = awaiting.agent if awaiting else None
        state = turn.state
        end = _TurnEndCondition(TurnEnd(self.lineup.replier, self.lineup.limits, usage))
        runner, contexts = self.build(
            history=() if state else turn.history,
            end=end,
            resume_at=resume_at,
            stream_text=stream_text,
            frontend=frontend_handoffs(turn.frontend_tools),
            context=turn.context,
        )
        if state is not None:
            await _load_state(runner, state.engine_state, self.names, resume_at)
        elif resume_at is not None and isinstance(runner, RoundRobinGroupChat):
            # Another engine's turn waits for this agent: a new round robin would start at
            # the first agent.
            await _load_state(runner, await runner.save_state(), self.names, resume_at)
        settled: list[InnerMessage] = []
        text = turn.newest
        if turn.approvals:
            assert awaiting is not None  # the service checked the decisions against it
            built = self._built[awaiting.agent]
            results: dict[str, Decided] = {}

            async def run_approved(name: str, arguments: Mapping[str, Any], call_id: str) -> str:
                return await built.needs_approval[name].run_json(arguments, token, call_id)

            def refuse(name: str, problem: str, call_id: str) -> str:
                return built.needs_approval[name].reject_arguments(problem, call_id)

            decided = decide(
                turn.approvals,
                awaiting,
                run=run_approved,
                refuse=refuse,
                max_chars=self._max_chars,
                settled=settled,
                results=results,
            )
            async for event in decided:
                yield event
            settled_results = {
                call_id: FunctionExecutionResult(
                    content=r.content, name=r.name, call_id=call_id, is_error=r.is_error
                )
                for call_id, r in results.items()
            }
            context = contexts[awaiting.agent]
            if state is None:
                # Paused by the other engine: its calls, with their results, as this engine
                # keeps them.
                calls = awaiting.calls
                await context.add_message(
                    AssistantMessage(
                        content=[FunctionCall(c.id, c.arguments, c.name) for c in calls],
                        source=awaiting.agent,
                    )
                )
                await context.add_message(
                    FunctionExecutionResultMessage(content=[settled_results[c.id] for c in calls])
                )
            else:
                context.settle(settled_results)
            text = decisions_text(turn.approvals, awaiting)
        assert text is not None
        task: TextMessage | HandoffMessage = TextMessage(content=text, source=USER)
        if self.kind == "swarm" and resume_at is not None:
            # A swarm goes on only from a handoff to one of its agents (autogen#5912).
            task = HandoffMessage(content=text, source=USER, target=resume_at)
        run = runner.run_stream(task=task, cancellation_token=token)
        transcript = Transcript(
            self.lineup.limits.max_tool_iterations,
            self._handoff_tools,
            settled,
            # The approved calls ran in this turn, before the agents.
            tool_calls=calls_run(turn.approvals),
        )
        with self._instrumentation.agent_run():
            try:
                async with aclosing(run) as items:
                    async for item in items:
                        if isinstance(item, TaskResult):
                            break
                        for event in _tell(transcript, item):
                            yield event
            except RuntimeError as error:
                # A team turns an agent's failure into a RuntimeError: answer with the original,
                # unless it ends the turn as a limit would (a budget spent mid-way).
                failure = usage.model_failure
                if failure is None:
                    raise
                if not end.policy.ends_at(failure):
                    raise failure from error

        async def save_state() -> dict[str, Any]:
            saved = dict(await runner.save_state())
            if self.kind != "single":
                _trim_thread(saved, self._count, self.history_budget)
            return saved

        yield await turn_result(
            transcript,
            self.lineup,
            engine=self.name,
            limit_reason=end.policy.reason,
            usage=usage,
            keep_state=turn.keep_state,
            save_state=save_state,
        )

    def build(
        self,
        *,
        history: Sequence[ChatMessage],
        end: "_TurnEndCondition",
        resume_at: str | None = None,
        stream_text: bool = False,
        frontend: Sequence[BuiltHandoff] = (),
        context: str = "",
    ) -> tuple[Runner, dict[str, TurnTrimmingContext]]:
        """The AutoGen objects of one turn, new: the agents with their model contexts (holding
        `history`) and, for a team, the team; each agent is given the client's `frontend`
        tools and `context`, when it sent any."""
        members = self.lineup.members
        contexts = {
            name: TurnTrimmingContext(
                [_history_message(m, name) for m in history],
                member.history_budget,
                self._count,
                self._settings.payload_logging,
                self._instrumentation.history_trimmed,
            )
            for name, member in members.items()
        }
        agents = [
            ServiceAgent(
                name=name,
                description=member.spec.description or f"The agent {name}.",
                model_client=self.model_client,
                workbench=ToolWorkbench(self._built[name].tools),
                handoffs=[*self._built[name].handoffs, *frontend],
                system_message=with_context(member.system_message, context),
                model_context=contexts[name],
                reflect_on_tool_use=True,
                max_tool_iterations=self.lineup.limits.max_tool_iterations,
                model_client_stream=stream_text,
            )
            for name, member in members.items()
        ]
        if self.kind == "single":
            return agents[0], contexts
        return self._team(agents, end, resume_at), contexts

    def _team(
        self, agents: list[AssistantAgent], end: "_TurnEndCondition", resume_at: str | None
    ) -> RoundRobinGroupChat | SelectorGroupChat | Swarm:
        if self.kind == "round_robin":
            return RoundRobinGroupChat(agents, termination_condition=end)
        if self.kind == "swarm":
            return Swarm(agents, termination_condition=end)
        return SelectorGroupChat(
            agents,
            model_client=self.model_client,
            termination_condition=end,
            selector_prompt=_SELECTOR_PROMPT,
            # The agent that asked the user goes on; after it, the model chooses.
            selector_func=None if resume_at is None else _first_pick(resume_at),
            # The selector's own history, which it would otherwise keep whole.
            model_context=TurnTrimmingContext([], self.history_budget, self._count),
        )


def _tell(transcript: Transcript, item: BaseAgentEvent | BaseChatMessage) -> list[TurnEvent]:
    """What an AutoGen message of the turn adds to its transcript, and the events it yields."""
    source = item.source
    if isinstance(item, ModelClientStreamingChunkEvent):
        return transcript.text_delta(source, item.content)
    if source == USER:
        return []  # the task, as given
    if isinstance(item, ToolCallRequestEvent):
        calls = [Call(call.id, call.name, call.arguments) for call in item.content]
        return transcript.calls_requested(source, calls)
    if isinstance(item, ToolCallExecutionEvent):
        results = [CallResult(r.call_id, r.name, r.content, bool(r.is_error)) for r in item.content]
        return transcript.calls_answered(source, results)
    if isinstance(item, HandoffMessage):
        transcript.handoff(source, item.target, item.content)
    elif isinstance(item, BaseTextChatMessage):
        transcript.text(source, item.content)
    elif isinstance(item, BaseChatMessage):
        transcript.other_chat(source)
    return []


def _posted(message: BaseChatMessage) -> Posted:
    if isinstance(message, HandoffMessage):
        return Posted(message.source, "to_user" if message.target == USER else "other")
    if isinstance(message, BaseTextChatMessage):
        return Posted(message.source, "text")
    return Posted(message.source, "other")


class _TurnEndCondition(TerminationCondition):
    """The turn-end policy as AutoGen asks a team's: AutoGen resets a condition once it
    fired; the policy's `reason` stays for the result."""

    def __init__(self, policy: TurnEnd) -> None:
        self.policy = policy
        self._stopped = False

    @property
    def terminated(self) -> bool:
        return self._stopped

    async def __call__(
        self, messages: Sequence[BaseAgentEvent | BaseChatMessage]
    ) -> StopMessage | None:
        if self._stopped:
            raise TerminatedException("the turn has already ended")
        posted = [_posted(m) for m in messages if isinstance(m, BaseChatMessage)]
        reason: StopReason | None = self.policy.after(posted)
        if reason is None:
            return None
        self._stopped = True
        return StopMessage(content=reason, source="turn_end")

    async def reset(self) -> None:
        self._stopped = False


def _history_message(message: ChatMessage, agent_name: str) -> LLMMessage:
    if message.role == "assistant":
        return AssistantMessage(content=message.content, source=agent_name)
    return UserMessage(content=message.content, source=USER)


def _first_pick(name: str) -> Callable[[Sequence[Any]], str | None]:
    """A selector function that picks `name` once, then leaves the choice to the model."""
    picks = [name]

    def pick(_: Sequence[Any]) -> str | None:
        return picks.pop() if picks else None

    return pick


async def _load_state(
    runner: Runner, saved: Mapping[str, Any], names: Sequence[str], resume_at: str | None
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
        raise unreadable_state("AutoGen cannot load the agents' state") from error


def _trim_thread(state: dict[str, Any], count: TokenCounter, budget: int) -> None:
    """Keep a team's threads within the history budget, by whole turns: the manager keeps
    every message of every turn, and the selector rebuilds its history from it; an agent of
    a swarm that is not handed the conversation buffers every message it is sent until it is."""
    for agent_state in state.get("agent_states", {}).values():
        for key in ("message_thread", "message_buffer"):
            thread = agent_state.get(key)
            if not thread:
                continue
            costs = [message_tokens(count, json.dumps(m.get("content"))) for m in thread]
            starts_turn = [m.get("source") == USER for m in thread]
            agent_state[key] = thread[trim_to_budget(costs, starts_turn, budget).first_kept :]


def _raised_by_framework(error: BaseException) -> bool:
    """Whether the error was raised inside AutoGen or the openai SDK rather than our code."""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    module = traceback.tb_frame.f_globals.get("__name__", "")
    return module.startswith(("autogen_", "openai"))
