"""The Agent Framework floors: a bare request-scoped agent, and a bare request-scoped team.

`app`, server (afd) of the lone agent's scenarios: every request builds one `Agent` around a
model client and a tool shared by the process (as the service does), with the system prompt,
and runs it. `team_app`, server (afd) of the team scenario: every request builds the bench
team's two agents in a `GroupChatBuilder` workflow that picks them in turn and stops after
the second one's reply, and runs it. Nothing else: no limits, trimming, logging, tracing or
sessions. What the service on Agent Framework (af) costs over these is the cost of its own
features. Runs in the Agent Framework render's environment as `uvicorn
bare_agent_framework:app` (or `:team_app`), with the upstream's base URL in
`BENCH_UPSTREAM_URL`.
"""

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from agent_framework import Agent, Message, tool
from agent_framework.openai import OpenAIChatCompletionClient
from agent_framework_orchestrations import GroupChatBuilder, GroupChatState
from baseline import (
    FIRST_PROMPT,
    SECOND_PROMPT,
    SYSTEM_PROMPT,
    ChatReply,
    ChatRequest,
    lookup_customer,
)
from fastapi import FastAPI, Request


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.client = OpenAIChatCompletionClient(
        model="bench", base_url=os.environ["BENCH_UPSTREAM_URL"], api_key="bench"
    )
    yield


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


# Built once, as the service builds its tools at start-up: a tool holds no request's state.
LOOKUP_CUSTOMER = tool(lookup_customer)
app = FastAPI(lifespan=lifespan)
app.get("/healthz")(healthz)


@app.post("/v1/chat")
async def chat(body: ChatRequest, request: Request) -> ChatReply:
    agent = Agent(
        client=request.app.state.client, instructions=SYSTEM_PROMPT, tools=[LOOKUP_CUSTOMER]
    )
    response = await agent.run(body.messages[-1].content)
    return ChatReply(reply=response.text)


team_app = FastAPI(lifespan=lifespan)
team_app.get("/healthz")(healthz)


def _in_turn(state: GroupChatState) -> str:
    names = list(state.participants)
    return names[state.current_round % len(names)]


def _two_replies(conversation: Sequence[Message]) -> bool:
    return sum(message.role == "assistant" for message in conversation) >= 2


@team_app.post("/v1/chat")
async def team_chat(body: ChatRequest, request: Request) -> ChatReply:
    client = request.app.state.client
    workflow = GroupChatBuilder(
        participants=[
            Agent(client=client, name="researcher", instructions=FIRST_PROMPT),
            Agent(client=client, name="writer", instructions=SECOND_PROMPT),
        ],
        selection_func=_in_turn,
        termination_condition=_two_replies,
        output_from="all",
    ).build()
    result = await workflow.run(body.messages[-1].content)
    replies = [output for output in result.get_outputs() if output.messages]
    written = [reply for reply in replies if reply.messages[-1].author_name == "writer"]
    return ChatReply(reply=written[-1].text)
