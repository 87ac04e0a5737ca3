"""Server (d): a bare request-scoped AutoGen team of the benchmark team's shape.

Every request builds two `AssistantAgent`s (sharing one model client, as the service does)
in a `RoundRobinGroupChat` that stops after the second one's reply, and runs it: nothing
else, no limits, logging, tracing or sessions. What the service (a) costs over this is the
cost of its own features. Runs in the rendered service's environment as `uvicorn
bare_team:app`, with the upstream's base URL in `BENCH_UPSTREAM_URL`.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from baseline import FIRST_PROMPT, SECOND_PROMPT, ChatReply, ChatRequest, model_client
from fastapi import FastAPI, Request


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.client = model_client()
    yield
    await app.state.client.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/chat")
async def chat(body: ChatRequest, request: Request) -> ChatReply:
    client = request.app.state.client
    team = RoundRobinGroupChat(
        [
            AssistantAgent("researcher", model_client=client, system_message=FIRST_PROMPT),
            AssistantAgent("writer", model_client=client, system_message=SECOND_PROMPT),
        ],
        termination_condition=MaxMessageTermination(3),  # the task and two replies
    )
    result = await team.run(task=body.messages[-1].content)
    return ChatReply(reply=result.messages[-1].to_text())
