"""Server (b), the floor: FastAPI handing each turn straight to the openai SDK, no agent.

It does the least a service of the same API must: validate the body, call the model
with a system prompt and the tools, run the tool when asked and call the model again.
`team_app`, the floor of the team scenario, makes the two calls a two-agent round robin
makes: the first agent's, then the second's with the first one's reply.
Runs in the rendered service's environment (same FastAPI, uvicorn and openai versions)
as `uvicorn passthrough:app`, with the upstream's base URL in `BENCH_UPSTREAM_URL`.
"""

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from baseline import (
    FIRST_PROMPT,
    SECOND_PROMPT,
    SYSTEM_PROMPT,
    ChatReply,
    ChatRequest,
    lookup_customer,
)
from fastapi import FastAPI, Request
from openai import AsyncOpenAI

# The tool schemas the rendered service sends for its default tools, so that both servers
# ask the same of the openai SDK and of the upstream.
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "lookup_customer",
            "description": "Look up a customer by id (like C-1001): name, plan, monthly fee "
            "and signup time.",
            "parameters": {
                "type": "object",
                "properties": {
                    "customer_id": {
                        "description": "customer_id",
                        "title": "Customer Id",
                        "type": "string",
                    }
                },
                "required": ["customer_id"],
                "additionalProperties": False,
            },
            "strict": False,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "parse_claim_amount",
            "description": 'Read the money amount of a claim from free text such as "$100", '
            '"1,250.50" or "EUR 30".',
            "parameters": {
                "type": "object",
                "properties": {
                    "text": {
                        "anyOf": [{"type": "string"}, {"type": "null"}],
                        "description": "text",
                        "title": "Text",
                    }
                },
                "required": ["text"],
                "additionalProperties": False,
            },
            "strict": False,
        },
    },
]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.client = AsyncOpenAI(base_url=os.environ["BENCH_UPSTREAM_URL"], api_key="bench")
    yield
    await app.state.client.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/chat")
async def chat(body: ChatRequest, request: Request) -> ChatReply:
    client: AsyncOpenAI = request.app.state.client
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        *(m.model_dump() for m in body.messages),
    ]
    completion = await client.chat.completions.create(model="bench", messages=messages, tools=TOOLS)
    answer = completion.choices[0].message
    if answer.tool_calls:
        messages.append(answer.model_dump(exclude_none=True))
        for call in answer.tool_calls:
            result = json.dumps(lookup_customer(**json.loads(call.function.arguments)))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        completion = await client.chat.completions.create(
            model="bench", messages=messages, tools=TOOLS
        )
        answer = completion.choices[0].message
    return ChatReply(reply=answer.content or "")


team_app = FastAPI(lifespan=lifespan)
team_app.get("/healthz")(healthz)


@team_app.post("/v1/chat")
async def team_chat(body: ChatRequest, request: Request) -> ChatReply:
    client: AsyncOpenAI = request.app.state.client
    conversation: list[Any] = [m.model_dump() for m in body.messages]
    first = await client.chat.completions.create(
        model="bench", messages=[{"role": "system", "content": FIRST_PROMPT}, *conversation]
    )
    found = {"role": "user", "name": "researcher", "content": first.choices[0].message.content}
    second = await client.chat.completions.create(
        model="bench",
        messages=[{"role": "system", "content": SECOND_PROMPT}, *conversation, found],
    )
    return ChatReply(reply=second.choices[0].message.content or "")
