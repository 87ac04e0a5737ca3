"""The benchmark's team: two agents in a round robin, the second one's reply ending the turn.

Copied over the `team.py` of a service rendered with `agent_team=round_robin`, so that
the service (a), the passthrough (b) and the bare team (d) make the same two model calls.
"""

from .runtime import AgentSpec, TeamSpec

FIRST = AgentSpec(
    name="researcher", system_prompt="Find the facts the user needs.", description="Researches."
)
SECOND = AgentSpec(
    name="writer", system_prompt="Write the reply from the facts found.", description="Writes."
)
TEAM = TeamSpec(kind="round_robin", agents=[FIRST, SECOND])
