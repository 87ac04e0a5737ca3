"""The agent or team the service runs, as built once per process from the team's spec: what
is true of it whatever engine runs it. An engine keeps one and builds its framework's
agents from it for every turn."""

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..settings import CoreSettings
from .conversation import Awaiting, SavedState
from .mcp_client import McpServer, McpToolSchema
from .specs import USER, AgentOrTeam, AgentSpec, TeamSpec
from .tokens import TokenCounter, message_tokens
from .tools import ServiceTool
from .turn import StateRefused, TurnLimits


@dataclass(frozen=True)
class McpTool:
    """A tool of an MCP server, as the agents are offered it: `<server>_<tool>`."""

    server: McpServer
    schema: McpToolSchema

    @property
    def name(self) -> str:
        return f"{self.server.name}_{self.schema['name']}"

    @property
    def description(self) -> str:
        return self.schema.get("description", "")


@dataclass
class Member:
    """One agent, as built at start-up: what every turn's copy of it shares."""

    spec: AgentSpec
    system_message: str
    tools: tuple[ServiceTool, ...]  # offered to the model as they are
    needs_approval: Mapping[str, ServiceTool]  # offered, but a call waits for a person
    editable: frozenset[str]  # the tools of `needs_approval` whose arguments an approver may edit
    mcp_tools: tuple[McpTool, ...] = ()
    history_budget: int = field(default=0)


def _team_preamble(name: str, names: Sequence[str]) -> str:
    # Teammates' messages reach an agent as user messages with a name: it must know its own.
    others = ", ".join(f"`{other}`" for other in names if other != name)
    return f"You are `{name}` in a team of agents with {others}, answering a user together.\n\n"


def unreadable_state(problem: str) -> StateRefused:
    return StateRefused(
        "session_unreadable",
        f"This session's saved record cannot be read by this version of the service: {problem}. "
        "It is kept as it is until you DELETE the session (`DELETE /v1/sessions/{id}`), "
        "which starts it over.",
    )


class Lineup:
    """The agents of the service, their tools, prompts and history budgets, and what a saved
    state of theirs waits for."""

    def __init__(
        self,
        spec: AgentOrTeam,
        *,
        settings: CoreSettings,
        count_tokens: TokenCounter,
        budget_for: Callable[[str, int], int],
    ) -> None:
        if isinstance(spec, TeamSpec):
            self.kind: str = spec.kind
            agents: Sequence[AgentSpec] = spec.agents
            self.replier = spec.replier
        else:
            if any(target != USER for target in spec.handoffs):
                raise ValueError(f"agent {spec.name!r}: a lone agent can hand off only to USER")
            self.kind, agents, self.replier = "single", [spec], spec.name
        self.names = tuple(agent.name for agent in agents)
        self.limits = TurnLimits(
            max_tool_iterations=settings.agent_max_tool_iterations,
            team_max_messages=settings.team_max_messages,
            team_token_budget=settings.team_token_budget,
            team_turn_seconds=settings.team_turn_seconds,
        )
        self._count = count_tokens
        self._budget_for = budget_for
        self.members = {agent.name: self._member(agent, settings.tools_enabled) for agent in agents}

    def _member(self, agent: AgentSpec, tools_enabled: bool) -> Member:
        offered = agent.tools if tools_enabled else ()
        names = [t.name for t in offered]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
        system_message = agent.system_prompt
        if self.kind != "single":
            system_message = _team_preamble(agent.name, self.names) + system_message
        return Member(
            spec=agent,
            system_message=system_message,
            tools=tuple(t for t in offered if not t.requires_approval),
            needs_approval={t.name: t for t in offered if t.requires_approval},
            editable=frozenset(t.name for t in offered if t.editable_arguments),
        )

    def set_budgets(self, schemas_of: Callable[[str], Iterable[object]]) -> None:
        """Each agent's history budget: what is left once its system message and the schemas
        of the tools it is offered (`schemas_of(agent)`, as the engine sends them) are paid."""
        for name, member in self.members.items():
            overhead = message_tokens(self._count, member.system_message) + sum(
                self._count(json.dumps(schema)) for schema in schemas_of(name)
            )
            member.history_budget = self._budget_for(name, overhead)

    @property
    def history_budget(self) -> int:
        """Tokens of conversation every agent can be sent."""
        return min(member.history_budget for member in self.members.values())

    def add_mcp_tools(
        self,
        server: McpServer,
        schemas: Sequence[McpToolSchema],
        engine_names: Callable[[str], Iterable[str]],
    ) -> list[McpTool]:
        """Give every agent `server`'s tools as well, before the first turn.

        A name an agent has already (a tool, a handoff (`engine_names(agent)` are the names
        of the engine's own handoff tools), an agent it hands off to), or one given twice, is
        a `ValueError`: the model would be offered two tools of one name.
        """
        tools = [McpTool(server, schema) for schema in schemas]
        names = [tool.name for tool in tools]
        for tool_name in names:
            if names.count(tool_name) > 1:
                raise ValueError(f"two tools are named {tool_name!r}")
        for name, member in self.members.items():
            taken = {
                *(tool.name for tool in (*member.tools, *member.needs_approval.values())),
                *(tool.name for tool in member.mcp_tools),
                *engine_names(name),
                *member.spec.handoffs,
            }
            for tool_name in names:
                if tool_name in taken:
                    raise ValueError(f"agent {name!r} has a tool or handoff named {tool_name!r}")
        for member in self.members.values():
            member.mcp_tools = (*member.mcp_tools, *tools)
        return tools

    @property
    def tool_descriptions(self) -> dict[str, str]:
        """What each tool of any agent does, by name, in name order."""
        every: dict[str, str] = {}
        for member in self.members.values():
            for tool in (*member.tools, *member.needs_approval.values(), *member.mcp_tools):
                every[tool.name] = tool.description
        return dict(sorted(every.items()))

    @property
    def agent_descriptions(self) -> dict[str, str]:
        """What each agent that has a description does, by name, in the team's order."""
        specs = [member.spec for member in self.members.values()]
        return {spec.name: spec.description for spec in specs if spec.description}

    @property
    def approval_tool_names(self) -> list[str]:
        return sorted({name for m in self.members.values() for name in m.needs_approval})

    def awaiting(self, state: SavedState | None) -> Awaiting | None:
        """What a saved state waits for, whichever engine saved it (what it waits for is
        engine-neutral: the agent that asked, the pending calls' ids, tools and arguments);
        `StateRefused` if this lineup cannot go on from it."""
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
            raise unreadable_state(f"it waits for an agent this team lacks, {awaiting.agent!r}")
        needs_approval = self.members[awaiting.agent].needs_approval
        for call in awaiting.calls if awaiting.kind == "approval" else ():
            if call.name not in needs_approval:
                raise unreadable_state(
                    f"call {call.id!r} waits for approval, but {awaiting.agent!r} has no "
                    f"tool {call.name!r} that needs it"
                )
        return awaiting

    def accepts_edits(self, agent: str, tool: str) -> bool:
        """Whether an approver may change the arguments of `agent`'s calls of `tool`."""
        return tool in self.members[agent].editable
