"""What the team's code declares: its agents and, for a multi-agent service, the team they form.

Specs are plain data, checked when they are made, so that a mistake (a handoff to nobody,
two agents of one name) stops the service at start-up rather than in a request.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .tools import ServiceTool

USER = "user"
"""The handoff target that hands the conversation back to the person: the agent gets an
`ask_user(question)` tool, and calling it ends the turn with `status: awaiting_input`."""

TeamKind = Literal["round_robin", "selector", "swarm"]


@dataclass(frozen=True)
class AgentSpec:
    """An agent: a name, its instructions, the tools it may call and whom it may hand over to.

    `description` tells teammates (and a selector team's speaker choice) what it does.
    `handoffs` names the agents of a swarm it may pass the conversation to, and `USER` to
    let it ask the user a question, in any kind of service.
    """

    name: str
    system_prompt: str
    tools: Sequence[ServiceTool] = ()
    description: str = ""
    handoffs: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"agent name {self.name!r} must be a Python identifier")
        if self.name == USER:
            raise ValueError(f"agent name {USER!r} is taken: it names the person in handoffs")
        if len(set(self.handoffs)) != len(self.handoffs) or self.name in self.handoffs:
            raise ValueError(f"agent {self.name!r}: handoffs must be distinct and not to itself")


@dataclass(frozen=True)
class TeamSpec:
    """Agents answering together, built afresh for every request.

    - `round_robin`: the agents speak in turn, in the order given;
    - `selector`: the model picks each next speaker from the agents' descriptions;
    - `swarm`: the first agent starts and the speaker changes only by a handoff.

    A turn ends when `reply_from` (by default the last agent; for a swarm, any agent)
    answers in text, when an agent asks the user something, or at a limit (settings
    `TEAM_MAX_MESSAGES`, `TEAM_TOKEN_BUDGET`, `TEAM_TURN_SECONDS`).
    """

    kind: TeamKind
    agents: Sequence[AgentSpec]
    reply_from: str | None = None

    def __post_init__(self) -> None:
        names = [agent.name for agent in self.agents]
        if len(names) < 2:
            raise ValueError("a team needs at least two agents")
        if len(set(names)) != len(names):
            raise ValueError(f"agent names in a team must be unique: {names}")
        for agent in self.agents:
            targets = {USER, *names} if self.kind == "swarm" else {USER}
            unknown = [target for target in agent.handoffs if target not in targets]
            if unknown:
                allowed = "agents of the team or USER" if self.kind == "swarm" else "only USER"
                raise ValueError(
                    f"agent {agent.name!r}: cannot hand off to {unknown}; a {self.kind} team "
                    f"allows {allowed}"
                )
            if self.kind == "selector" and not agent.description:
                raise ValueError(
                    f"agent {agent.name!r}: a selector team chooses speakers by their "
                    "descriptions; give each agent one"
                )
        if self.reply_from is not None and self.reply_from not in names:
            raise ValueError(f"reply_from {self.reply_from!r} is not an agent of the team")

    @property
    def replier(self) -> str | None:
        """The agent whose text reply ends a turn; None when any agent's does."""
        if self.reply_from is not None or self.kind == "swarm":
            return self.reply_from
        return self.agents[-1].name


AgentOrTeam = AgentSpec | TeamSpec
