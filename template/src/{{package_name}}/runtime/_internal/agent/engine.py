"""The seam between the service and the agent framework that runs its agents.

Everything above this seam (the HTTP contract, conversations, sessions, runs, protocols,
evals) is the service's own and is written once. An engine turns the team's spec into a
framework's agents for each turn and reports what happened as the neutral events of
`turn.py`. Each engine is a package of `engines/`, and the service has exactly one,
named by `project.ENGINE`: only that package imports its framework.
"""

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import Protocol

from ..project import ENGINE
from ..settings import CoreSettings
from .conversation import Awaiting, SavedState
from .instrumentation import Instrumentation
from .lineup import Lineup
from .mcp_client import McpServer, McpToolSchema
from .specs import AgentOrTeam
from .tokens import TokenCounter
from .turn import TurnEvent, TurnInput
from .upstream import CallGuard


@dataclass(frozen=True)
class EngineFeatures:
    """Where engines differ, for the code above the seam to ask rather than to know."""

    # Loggers of the framework that write whole prompts, replies or tool arguments: kept at
    # WARNING unless LOG_ENGINE_EVENTS is set.
    content_loggers: tuple[str, ...]
    # Loggers of the framework that are too chatty at INFO for a service's log.
    quiet_loggers: tuple[str, ...]
    # The team kinds (`TeamSpec.kind`, or "single") this engine can run.
    team_kinds: frozenset[str]


class Engine(Protocol):
    """A lone agent or a team, as one engine runs it: built once per process from the
    spec, it builds the framework's agents anew for every turn (`run`), so that nothing
    of one conversation reaches another."""

    name: str
    features: EngineFeatures
    kind: str  # "single", or the team's kind
    names: tuple[str, ...]  # the agents, in the team's order

    @property
    def history_budget(self) -> int:
        """Tokens of conversation every agent can be sent."""
        ...

    @property
    def tool_descriptions(self) -> dict[str, str]:
        """What each tool of any agent does, by name, in name order."""
        ...

    @property
    def agent_descriptions(self) -> dict[str, str]:
        """What each agent that has a description does, by name, in the team's order."""
        ...

    @property
    def approval_tool_names(self) -> list[str]:
        """The tools of any agent whose calls wait for a person's approval, in name order."""
        ...

    @property
    def tool_names(self) -> frozenset[str]:
        """Every name a model of any agent is offered a tool by: its tools and its handoffs
        (`ask_user` included). A frontend tool may take none of them."""
        ...

    def add_tools(self, server: McpServer, schemas: Sequence[McpToolSchema]) -> None:
        """Give every agent an MCP server's tools too, before the first turn; `ValueError`
        for a name an agent has already."""
        ...

    def awaiting(self, state: SavedState | None) -> Awaiting | None:
        """What a saved state waits for; `StateRefused` if this engine cannot go on from it."""
        ...

    def accepts_edits(self, agent: str, tool: str) -> bool:
        """Whether an approver may change the arguments of `agent`'s calls of `tool`."""
        ...

    async def start(self) -> None:
        """Make what every turn shares (the model client): in the app's lifespan."""
        ...

    async def aclose(self) -> None: ...

    def run(self, turn: TurnInput, *, stream_text: bool) -> AsyncIterator[TurnEvent]:
        """Answer the turn on freshly built agents: yields tool calls as they start and
        end, text deltas when `stream_text` is set, and a `TurnResult` last. Cancelling
        the task that iterates it stops the turn, its model call included."""
        ...

    def upstream_cause(self, error: BaseException) -> BaseException | None:
        """The model's error behind `error` (an `openai.OpenAIError`, or `UnusableAnswer`
        for an answer the framework could not use), unwrapped from the framework's own
        wrapping; None when `error` did not come from the model or the framework."""
        ...

    async def complete(self, instructions: str, text: str) -> str:
        """One model call outside any agent (an evaluation's judge): its text answer."""
        ...


class LineupEngine:
    """What every engine answers from its `Lineup` alike, before and between turns: its
    agents, their budgets and tools, and whether a saved state is one it can go on from."""

    name: str
    features: EngineFeatures

    def __init__(self, lineup: Lineup) -> None:
        if lineup.kind not in self.features.team_kinds:
            raise ValueError(f"the {self.name} engine cannot run a {lineup.kind} team")
        self.lineup = lineup
        self.kind = lineup.kind
        self.names = lineup.names

    @property
    def history_budget(self) -> int:
        return self.lineup.history_budget

    @property
    def tool_descriptions(self) -> dict[str, str]:
        return self.lineup.tool_descriptions

    @property
    def agent_descriptions(self) -> dict[str, str]:
        return self.lineup.agent_descriptions

    @property
    def approval_tool_names(self) -> list[str]:
        return self.lineup.approval_tool_names

    def awaiting(self, state: SavedState | None) -> Awaiting | None:
        return self.lineup.awaiting(state)

    def accepts_edits(self, agent: str, tool: str) -> bool:
        return self.lineup.accepts_edits(agent, tool)


def _package() -> ModuleType:
    return import_module(f"{__package__}.engines.{ENGINE}")


def engine_features() -> EngineFeatures:
    """The features of the service's engine (`project.ENGINE`), before one is built."""
    features: EngineFeatures = _package().FEATURES
    return features


def load_engine(
    spec: AgentOrTeam,
    *,
    settings: CoreSettings,
    instrumentation: Instrumentation,
    count_tokens: TokenCounter,
    budget_for: Callable[[str, int], int],
    call_guard: CallGuard | None = None,
) -> Engine:
    """The service's engine (`project.ENGINE`), built for `spec`; its model calls pass
    `call_guard`, when a feature has one."""
    engine: Engine = _package().Engine(
        spec,
        settings=settings,
        instrumentation=instrumentation,
        count_tokens=count_tokens,
        budget_for=budget_for,
        call_guard=call_guard,
    )
    return engine
