"""Server (d) of the Agent Framework scenarios: a bare request-scoped Agent Framework agent.

Every request builds one `Agent` around a model client and a tool shared by the process (as
the service does), with the system prompt, and runs it: nothing else, no limits,
trimming, logging, tracing or sessions. What the service on Agent Framework (af) costs over
this is the cost of its own features, as (a) over (d) in the team scenario on AutoGen. Runs
in the Agent Framework render's environment as `uvicorn bare_agent_framework:app`, with the
upstream's base URL in `BENCH_UPSTREAM_URL`.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agent_framework import Agent, tool
from agent_framework.openai import OpenAIChatCompletionClient
from baseline import SYSTEM_PROMPT, ChatReply, ChatRequest, lookup_customer
from fastapi import FastAPI, Request


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.client = OpenAIChatCompletionClient(
        model="bench", base_url=os.environ["BENCH_UPSTREAM_URL"], api_key="bench"
    )
    yield


# Built once, as the service builds its tools at start-up: a tool holds no request's state.
LOOKUP_CUSTOMER = tool(lookup_customer)
app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/chat")
async def chat(body: ChatRequest, request: Request) -> ChatReply:
    agent = Agent(
        client=request.app.state.client, instructions=SYSTEM_PROMPT, tools=[LOOKUP_CUSTOMER]
    )
    response = await agent.run(body.messages[-1].content)
    return ChatReply(reply=response.text)
