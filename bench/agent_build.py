"""Time to build what the rendered runtime builds for every turn: the agents with their model
contexts and, for a team, the team.

Runs in the rendered service's environment: `python agent_build.py PACKAGE MODULE:NAME ENGINE`,
where MODULE:NAME is what the service serves (`agent:AGENT`, `team:TEAM`) and ENGINE the
render's `engine` answer. Loads the engine as the service does (`load_engine`, then `start`,
which makes the model client), builds what the engine's `run` builds before its first model
call, from a two-message history, and prints the median in microseconds.
"""

import asyncio
import importlib
import statistics
import sys
import timeit
from collections.abc import Callable, Sequence
from typing import Any

BUILDS_PER_SAMPLE = 200
SAMPLES = 15


def autogen_build(internal: str, engine: Any, history: Sequence[Any]) -> Callable[[], object]:
    """The agents, their trimming contexts, the turn's end condition and, for a team, the
    team: `AutoGenEngine.build`."""
    crew = importlib.import_module(f"{internal}.agent.engines.autogen.crew")
    usage = importlib.import_module(f"{internal}.agent.turn").TurnUsage
    lineup = engine.lineup

    def build() -> object:
        end = crew._TurnEndCondition(crew.TurnEnd(lineup.replier, lineup.limits, usage()))
        return engine.build(history=history, end=end)

    return build


def agent_framework_build(
    internal: str, engine: Any, history: Sequence[Any]
) -> Callable[[], object]:
    """The `RawAgent` with its compaction strategy, a fresh `AgentSession`, and the history
    as Agent Framework's messages."""
    module = importlib.import_module(f"{internal}.agent.engines.agent_framework.engine")
    client = importlib.import_module(f"{internal}.agent.engines.agent_framework.client")
    name = engine.names[0]
    instructions = engine.lineup.members[name].system_message

    def build() -> object:
        agent = engine._agent_for_turn(name, instructions, tools=engine._offered[name])
        return agent, module.AgentSession(), [client.history_message(m) for m in history]

    return build


BUILDERS = {"autogen": autogen_build, "agent_framework": agent_framework_build}


def main(package: str, served: str, engine_name: str) -> None:
    internal = f"{package}.runtime._internal"
    load_engine = importlib.import_module(f"{internal}.agent.engine").load_engine
    history_budget = importlib.import_module(f"{internal}.agent.service").history_budget
    chat_message = importlib.import_module(f"{internal}.contract").ChatMessage
    instrumentation = importlib.import_module(f"{internal}.agent.instrumentation").Instrumentation()
    count_tokens = importlib.import_module(f"{internal}.agent.tokens").build_token_counter
    module, _, name = served.partition(":")
    spec = getattr(importlib.import_module(f"{package}.{module}"), name)
    settings = importlib.import_module(f"{package}.settings").Settings.load()
    engine = load_engine(
        spec,
        settings=settings,
        instrumentation=instrumentation,
        count_tokens=count_tokens(settings),
        budget_for=lambda agent, overhead: history_budget(settings, agent, overhead),
    )
    history = [
        chat_message(role="user", content="Where is my order?"),
        chat_message(role="assistant", content="Which order number?"),
    ]

    async def timed() -> float:
        await engine.start()  # the model client, which every turn shares
        try:
            build = BUILDERS[engine_name](internal, engine, history)
            build()  # the first build pays for imports and caches
            samples = timeit.repeat(build, number=BUILDS_PER_SAMPLE, repeat=SAMPLES)
            return statistics.median(samples) / BUILDS_PER_SAMPLE
        finally:
            await engine.aclose()

    print(round(asyncio.run(timed()) * 1e6, 1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
