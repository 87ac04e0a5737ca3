"""Server (ad): a bare request-scoped AutoGen agent, that engine's own floor.

Every request builds one `AssistantAgent` around a model client and a tool shared by the
process (as the service does), with the system prompt, reflecting on the tool's result as
the service's agent does, and runs it: nothing else, no limits, trimming, logging, tracing or
sessions. What the service (a) costs over this is the cost of its own features. Runs in the
rendered service's environment as `uvicorn bare_autogen:app`, with the upstream's base URL
in `BENCH_UPSTREAM_URL`.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from autogen_agentchat.agents import AssistantAgent
from autogen_core.tools import FunctionTool
from baseline import SYSTEM_PROMPT, ChatReply, ChatRequest, lookup_customer, model_client
from fastapi import FastAPI, Request


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.client = model_client()
    yield
    await app.state.client.close()


# Built once, as the service builds its tools at start-up: a tool holds no request's state.
LOOKUP_CUSTOMER = FunctionTool(lookup_customer, description=lookup_customer.__doc__ or "")
app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/chat")
async def chat(body: ChatRequest, request: Request) -> ChatReply:
    agent = AssistantAgent(
        "assistant",
        model_client=request.app.state.client,
        system_message=SYSTEM_PROMPT,
        tools=[LOOKUP_CUSTOMER],
        reflect_on_tool_use=True,
    )
    result = await agent.run(task=body.messages[-1].content)
    return ChatReply(reply=result.messages[-1].to_text())
