"""Time to build what the rendered runtime builds for every turn: the agents with their model
contexts and, for a team, the team.

Runs in the rendered service's environment: `python agent_build.py PACKAGE MODULE:NAME`,
where MODULE:NAME is what the service serves (`agent:AGENT`, `team:TEAM`). Builds through
the runtime's own `Crew.build` (tools and model client built once, fresh contexts holding a
two-message history) and prints the median in microseconds.
"""

import importlib
import statistics
import sys
import timeit

BUILDS_PER_SAMPLE = 200
SAMPLES = 15


def main(package: str, served: str) -> None:
    internal = f"{package}.runtime._internal"
    bridge = importlib.import_module(f"{internal}.agent.autogen_bridge")
    service = importlib.import_module(f"{internal}.agent.service")
    chat_message = importlib.import_module(f"{internal}.http.schemas").ChatMessage
    instrumentation = importlib.import_module(f"{internal}.agent.instrumentation").Instrumentation()
    count_tokens = importlib.import_module(f"{internal}.agent.tokens").build_token_counter
    module, _, name = served.partition(":")
    spec = getattr(importlib.import_module(f"{package}.{module}"), name)
    settings = importlib.import_module(f"{package}.settings").Settings.load()
    crew = bridge.Crew(
        spec,
        settings=settings,
        instrumentation=instrumentation,
        count_tokens=count_tokens(settings),
        budget_for=lambda agent, overhead: service.history_budget(settings, agent, overhead),
    )
    model_client = bridge.build_model_client(settings, instrumentation)
    history = [
        chat_message(role="user", content="Where is my order?"),
        chat_message(role="assistant", content="Which order number?"),
    ]

    def build() -> object:
        return crew.build(model_client, history=history)

    build()  # the first build pays for imports and caches
    samples = timeit.repeat(build, number=BUILDS_PER_SAMPLE, repeat=SAMPLES)
    print(round(statistics.median(samples) / BUILDS_PER_SAMPLE * 1e6, 1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
