"""Time to build the request-scoped agent the rendered runtime builds for every turn.

Runs in the rendered service's environment: `python agent_build.py PACKAGE`. Builds the
agent as `runtime._internal.agent.autogen_bridge.run_turn` does (tools and model client
built once, a fresh model context holding a two-message history) and prints the median
in microseconds.
"""

import importlib
import statistics
import sys
import timeit

from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import AssistantMessage, UserMessage

BUILDS_PER_SAMPLE = 200
SAMPLES = 15


def main(package: str) -> None:
    internal = f"{package}.runtime._internal"
    bridge = importlib.import_module(f"{internal}.agent.autogen_bridge")
    estimate_tokens = importlib.import_module(f"{internal}.agent.tokens").estimate_tokens
    instrumentation = importlib.import_module(f"{internal}.agent.instrumentation").Instrumentation()
    agent_spec = importlib.import_module(f"{package}.agent").AGENT
    settings = importlib.import_module(f"{package}.settings").Settings.load()
    tools = bridge.build_tools(agent_spec.tools, settings.tool_result_max_chars, instrumentation)
    model_client = bridge.build_model_client(settings, instrumentation)

    def build() -> AssistantAgent:
        return AssistantAgent(
            name=agent_spec.name,
            model_client=model_client,
            tools=list(tools),
            system_message=agent_spec.system_prompt,
            model_context=bridge.TurnTrimmingContext(
                [
                    UserMessage(content="Where is my order?", source="user"),
                    AssistantMessage(content="Which order number?", source=agent_spec.name),
                ],
                settings.history_max_tokens,
                estimate_tokens,
            ),
            reflect_on_tool_use=True,
            max_tool_iterations=settings.agent_max_tool_iterations,
        )

    build()  # first build pays for imports and caches
    samples = timeit.repeat(build, number=BUILDS_PER_SAMPLE, repeat=SAMPLES)
    print(round(statistics.median(samples) / BUILDS_PER_SAMPLE * 1e6, 1))


if __name__ == "__main__":
    main(sys.argv[1])
