"""Server (c), the naive pattern: one global AssistantAgent answers every request.

The agent, and so its message list, is built once at import and shared by all
requests, as in many quick-start samples. Concurrent turns then read and append to one
history: each caller's turn reaches the model with everybody's earlier turns, and
interleaved tool calls break the history's order. Runs in the rendered service's
environment as `uvicorn naive:app`, with the upstream's base URL in `BENCH_UPSTREAM_URL`.
"""

import os

from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import ModelFamily, ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient
from baseline import SYSTEM_PROMPT, ChatReply, ChatRequest, lookup_customer
from fastapi import FastAPI

agent = AssistantAgent(
    name="support",
    model_client=OpenAIChatCompletionClient(
        model="bench",
        base_url=os.environ["BENCH_UPSTREAM_URL"],
        api_key="bench",
        model_info=ModelInfo(
            vision=False,
            function_calling=True,
            json_output=False,
            family=ModelFamily.UNKNOWN,
            structured_output=False,
        ),
    ),
    tools=[lookup_customer],
    system_message=SYSTEM_PROMPT,
    reflect_on_tool_use=True,
)
app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/chat")
async def chat(body: ChatRequest) -> ChatReply:
    result = await agent.run(task=body.messages[-1].content)
    return ChatReply(reply=result.messages[-1].to_text())
