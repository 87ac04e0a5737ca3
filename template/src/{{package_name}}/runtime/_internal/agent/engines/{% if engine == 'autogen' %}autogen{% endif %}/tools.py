"""The agents' tools as AutoGen holds them: the service's own through the JSON-safe wrapper,
an MCP server's, the handoffs, a client's frontend tools, and the agent class that answers
every call."""

from collections.abc import Mapping, Sequence
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import Handoff
from autogen_core import CancellationToken, FunctionCall, trace_tool_span
from autogen_core.models import FunctionExecutionResult
from autogen_core.tools import BaseTool, FunctionTool, StaticStreamWorkbench, ToolSchema, Workbench
from pydantic import BaseModel, PrivateAttr

from ...approvals import AWAITING_APPROVAL, AWAITING_FRONTEND, arguments_problem
from ...instrumentation import Instrumentation
from ...lineup import McpTool
from ...specs import USER
from ...tools import ServiceTool
from ...turn import FrontendTool


class JsonSafeFunctionTool(FunctionTool):
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


class ToolWorkbench(StaticStreamWorkbench):
    """The agent's tools, held as AutoGen holds them for `tools=`, and by name for
    `ServiceAgent`."""

    def __init__(self, tools: Sequence[BaseTool[Any, Any]]) -> None:
        super().__init__(list(tools))
        self.tools_by_name = {tool.name: tool for tool in tools}


class ServiceAgent(AssistantAgent):
    """An AssistantAgent whose tools answer every call, arguments that are no JSON object
    included: for those AutoGen sends the model its parser's bare message (`Error:
    Expecting ...`), calls the tool with no arguments, or, nested too deeply, stalls the
    turn until its deadline."""

    @staticmethod
    async def _execute_tool_call(
        tool_call: FunctionCall, workbench: Sequence[Workbench], **rest: Any
    ) -> tuple[FunctionCall, FunctionExecutionResult]:
        problem = arguments_problem(tool_call.arguments)
        [tools] = workbench  # the one the crew gives the agent
        tool = tools.tools_by_name.get(tool_call.name)
        if problem is None or not isinstance(tool, JsonSafeFunctionTool | McpAgentTool):
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


class McpAgentTool(BaseTool[BaseModel, BaseModel]):
    """A tool of an MCP server, under the name `<server>_<tool>`."""

    def __init__(self, tool: McpTool, instrumentation: Instrumentation) -> None:
        super().__init__(BaseModel, BaseModel, tool.name, tool.description)
        self._server = tool.server
        self._tool = tool.schema["name"]
        self._schema = ToolSchema(
            name=tool.name, description=tool.description, parameters=tool.schema["parameters"]
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


class AwaitingApprovalTool(JsonSafeFunctionTool):
    """What the model is offered for a tool that needs approval: the tool's own schema, but a
    call only pauses the turn (it is a handoff to the user); the tool runs once approved."""

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> str:
        return AWAITING_APPROVAL


class FrontendAgentTool(BaseTool[BaseModel, BaseModel]):
    """A frontend tool, with the client's schema: a call only ends the turn (it is a
    handoff to the user), and the client's page runs it."""

    def __init__(self, tool: FrontendTool) -> None:
        super().__init__(BaseModel, BaseModel, tool.name, tool.description)
        self._schema = ToolSchema(
            name=tool.name,
            description=tool.description,
            parameters=tool.parameters,  # type: ignore[typeddict-item]
        )

    @property
    def schema(self) -> ToolSchema:
        return self._schema

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> str:
        return AWAITING_FRONTEND

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> BaseModel:
        raise NotImplementedError("called through run_json")

    def return_value_as_string(self, value: Any) -> str:
        return str(value)


def frontend_handoffs(tools: Sequence[FrontendTool]) -> list["BuiltHandoff"]:
    """A turn's frontend tools, as handoffs to the user that its agents are given."""
    return [handoff(USER, FrontendAgentTool(tool)) for tool in tools]


def _ask_user(question: str) -> str:
    return question


class BuiltHandoff(Handoff):
    """A handoff whose tool is built once, at start-up: AutoGen builds a new FunctionTool, about
    a millisecond, each time an agent is made with a plain handoff."""

    _tool: BaseTool[Any, Any] | None = PrivateAttr(default=None)

    @property
    def handoff_tool(self) -> BaseTool[Any, Any]:
        if self._tool is None:
            self._tool = super().handoff_tool
        return self._tool


def handoff(target: str, tool: BaseTool[Any, Any] | None = None) -> BuiltHandoff:
    """A handoff to `target`, with `tool` as the model sees it (by default AutoGen's own)."""
    if tool is None:
        built = BuiltHandoff(target=target)
    else:
        built = BuiltHandoff(target=target, name=tool.name, description=tool.description)
        built._tool = tool
    built.handoff_tool.schema  # noqa: B018 - built now, not in a request
    return built


ASK_USER = FunctionTool(
    _ask_user,
    name="ask_user",
    description="Ask the user a question and end your turn until they answer. Use it only "
    "when you cannot go on without something that only the user knows.",
)
