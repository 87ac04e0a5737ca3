"""Server (c), the naive pattern: one global AssistantAgent answers every request.

The agent, and so its message list, is built once at import and shared by all
requests, as in many quick-start samples. Concurrent turns then read and append to one
history: each caller's turn reaches the model with everybody's earlier turns, and
interleaved tool calls break the history's order. Runs in the rendered service's
environment as `uvicorn naive:app`, with the upstream's base URL in `BENCH_UPSTREAM_URL`.
"""

from autogen_agentchat.agents import AssistantAgent
from baseline import SYSTEM_PROMPT, ChatReply, ChatRequest, lookup_customer, model_client
from fastapi import FastAPI

agent = AssistantAgent(
    name="support",
    model_client=model_client(),
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
