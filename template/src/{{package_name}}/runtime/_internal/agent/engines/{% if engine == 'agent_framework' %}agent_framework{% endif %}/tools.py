"""The agents' tools as Agent Framework holds them, and the function middleware that runs
every call: the service's own tools through the JSON-safe wrapper, an MCP server's, the
tools that wait for a person's approval, a client's frontend tools, and `ask_user`."""

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from agent_framework import (
    Content,
    FunctionInvocationContext,
    FunctionMiddleware,
    FunctionTool,
    MiddlewareTermination,
)
from agent_framework.observability import get_function_span, get_function_span_attributes

from ...approvals import AWAITING_APPROVAL, AWAITING_FRONTEND, arguments_problem
from ...instrumentation import Instrumentation
from ...lineup import McpTool, Member
from ...specs import USER
from ...tools import ServiceTool
from ...transcript import CallResult
from ...turn import FrontendTool
from .client import result_text
from .state import current_turn

ASK_USER = "ask_user"
# A swarm's handoff tools, named as AutoGen names them, so that a model is offered the same
# tools on either engine: Agent Framework's `HandoffBuilder` would name them `handoff_to_<x>`.
HANDOFF_PREFIX = "transfer_to_"


class _AnsweringTool(FunctionTool):
    """A tool whose `invoke` runs it whole: its arguments are checked, and its result and
    errors written, by the service, not by Agent Framework."""

    @property
    def declaration_only(self) -> bool:
        return False  # `invoke` is the implementation: there is no Python function to wrap

    async def invoke(self, *, arguments: Any = None, **_: Any) -> list[Content]:
        mapping = dict(arguments) if isinstance(arguments, Mapping) else {}
        return [Content.from_text(await self.answer(mapping))]

    async def answer(self, arguments: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def refuse(self, problem: str) -> str:
        """What the model receives for arguments that never reached the tool."""
        raise NotImplementedError


class ServiceFunctionTool(_AnsweringTool):
    """One of the service's tools, answered by `ServiceTool.call`: canonical JSON, within
    the size limit, and a structured error for whatever goes wrong."""

    def __init__(
        self, service_tool: ServiceTool, max_chars: int, instrumentation: Instrumentation
    ) -> None:
        # The schema Agent Framework would infer from the function, taken once.
        inferred = FunctionTool(
            name=service_tool.name, description=service_tool.description, func=service_tool.function
        )
        super().__init__(
            name=service_tool.name,
            description=service_tool.description,
            input_model=inferred.parameters(),
        )
        self._service_tool = service_tool
        self._max_chars = max_chars
        self._record_outcome = instrumentation.tool_call

    async def answer(self, arguments: Mapping[str, Any]) -> str:
        result = await self._service_tool.call(arguments, max_chars=self._max_chars)
        self._record_outcome(self.name, result.outcome)
        return result.text

    def refuse(self, problem: str) -> str:
        result = self._service_tool.reject_arguments(problem, max_chars=self._max_chars)
        self._record_outcome(self.name, result.outcome)
        return result.text


class McpFunctionTool(_AnsweringTool):
    """A tool of an MCP server, under the name `<server>_<tool>`."""

    def __init__(self, tool: McpTool, instrumentation: Instrumentation) -> None:
        super().__init__(
            name=tool.name, description=tool.description, input_model=tool.schema["parameters"]
        )
        self._server = tool.server
        self._tool = tool.schema["name"]
        self._record_outcome = instrumentation.tool_call

    async def answer(self, arguments: Mapping[str, Any]) -> str:
        text, failed = await self._server.call(self._tool, arguments)
        self._record_outcome(self.name, "tool_error" if failed else "ok")
        return text

    def refuse(self, problem: str) -> str:
        text = self._server.reject_arguments(self._tool, problem)
        self._record_outcome(self.name, "invalid_arguments")
        return text


class FrontendFunctionTool(_AnsweringTool):
    """A frontend tool, with the client's schema: `ToolCalls` ends the turn at a call of it,
    and the client's page runs it."""

    def __init__(self, tool: FrontendTool) -> None:
        super().__init__(name=tool.name, description=tool.description, input_model=tool.parameters)

    async def answer(self, arguments: Mapping[str, Any]) -> str:
        return AWAITING_FRONTEND  # never run: `ToolCalls` answers the call itself


def frontend_tools(tools: Sequence[FrontendTool]) -> list[FunctionTool]:
    """A turn's frontend tools, as its agents are offered them."""
    return [FrontendFunctionTool(tool) for tool in tools]


def _ask_user(question: str) -> str:
    return question


ASK_USER_TOOL = FunctionTool(
    name=ASK_USER,
    description="Ask the user a question and end your turn until they answer. Use it only "
    "when you cannot go on without something that only the user knows.",
    func=_ask_user,
)


def _hand_off() -> str:
    return ""  # never run: `ToolCalls` answers a handoff itself


def handoff_tool(target: str) -> FunctionTool:
    """The tool with which an agent of a swarm hands the conversation to `target`."""
    return FunctionTool(
        name=f"{HANDOFF_PREFIX}{target}", description=f"Handoff to {target}.", func=_hand_off
    )


def handoff_target(member: Member, tool_name: str) -> str | None:
    """The agent that a call of `tool_name` by `member` hands over to; None for no handoff."""
    target = tool_name.removeprefix(HANDOFF_PREFIX)
    if target != tool_name and target != USER and target in member.spec.handoffs:
        return target
    return None


class ToolCalls(FunctionMiddleware):
    """Runs every tool call of a turn, and tells the turn's story of it.

    A call whose arguments are no JSON object is refused with our `invalid_arguments` error:
    Agent Framework would hand the tool `{"raw": text}`. A call of a tool that needs
    approval, a frontend tool's, and a question for the user, end the turn: the first two
    answer the model with a placeholder, which the next turn replaces with the real result,
    once a person decided or the client's page ran it. A
    handoff ends the agent's run, and the team's next speaker is the agent handed to.
    """

    async def process(
        self, context: FunctionInvocationContext, call_next: Callable[[], Awaitable[None]]
    ) -> None:
        turn = current_turn.get()
        if turn is None:  # a call made outside any turn of ours
            await call_next()
            return
        tool = context.function
        call_id = str(context.metadata["call_id"])
        arguments = turn.arguments.get(call_id, "{}")
        if tool.name == ASK_USER:
            question = _question(arguments)
            turn.hand_over(USER, question)
            context.result = question
            raise MiddlewareTermination(result=question)
        target = handoff_target(turn.member, tool.name)
        if target is not None:
            message = f"Transferred to {target}, adopting the role of {target} immediately."
            turn.hand_over(target, message)
            context.result = message
            raise MiddlewareTermination(result=message)
        if isinstance(tool, FrontendFunctionTool):
            left = CallResult(call_id, tool.name, AWAITING_FRONTEND, is_error=False)
            turn.transcript.calls_answered(turn.agent, [left])  # told as the client's to run
            turn.hand_over(USER, AWAITING_FRONTEND)
            context.result = AWAITING_FRONTEND
            raise MiddlewareTermination(result=AWAITING_FRONTEND)
        if tool.name in turn.member.needs_approval:
            turn.hand_over(USER, AWAITING_APPROVAL)
            context.result = AWAITING_APPROVAL
            raise MiddlewareTermination(result=AWAITING_APPROVAL)
        with tool_span(tool, call_id):
            problem = arguments_problem(arguments)
            if problem is not None and isinstance(tool, _AnsweringTool):
                context.result = tool.refuse(f"arguments: {problem}")
            else:
                await call_next()
        content = context.result if isinstance(context.result, str) else _text(context.result)
        answered = CallResult(call_id=call_id, name=tool.name, content=content, is_error=False)
        for event in turn.transcript.calls_answered(turn.agent, [answered]):
            turn.emit(event)


def tool_span(tool: FunctionTool, call_id: str) -> AbstractContextManager[object]:
    """The span of one tool call, as Agent Framework names it (`execute_tool <name>`): the
    tool's own logs and its outcome are recorded under it."""
    return get_function_span(get_function_span_attributes(tool, call_id))


def _question(arguments: str) -> str:
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get("question"), str):
        return parsed["question"]
    return arguments


def _text(result: Any) -> str:
    if isinstance(result, list):
        return "".join(
            result_text(part) if part.type == "function_result" else part.text or ""
            for part in result
            if isinstance(part, Content)
        )
    return "" if result is None else str(result)
