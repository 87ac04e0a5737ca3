"""A deterministic OpenAI-compatible chat server: the `offline` model, and a stub for tests.

It answers `POST /v1/chat/completions` from the last message it is sent:

- a user message `/tool NAME {"arg": ...}` asks for a call of tool NAME with those
  arguments (sent verbatim, so malformed JSON can be tried too);
- a user message `/roles` answers with the roles of all messages received, in order;
- a tool result is answered with `NAME returned: RESULT`;
- anything else is echoed back.

The `offline` provider runs it in-process, so the service's real openai client path
is exercised with no network; `serve fake-upstream` runs it over HTTP for development.
"""

import json
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

OFFLINE_PREFIX = "[offline model]"


def create_fake_upstream(record: list[dict[str, Any]] | None = None) -> FastAPI:
    """Build the server; when `record` is given, every request body is appended to it."""
    app = FastAPI(title="Fake OpenAI-compatible upstream", openapi_url=None)

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        body = await request.json()
        if record is not None:
            record.append(body)
        return JSONResponse(_completion(body))

    return app


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = body["messages"]
    message = _answer(
        messages, offered_tools={t["function"]["name"] for t in body.get("tools", [])}
    )
    prompt_tokens = sum(_estimate_tokens(_text(m)) + 4 for m in messages)
    completion_tokens = _estimate_tokens(
        message.get("content") or json.dumps(message.get("tool_calls"))
    )
    return {
        "id": f"chatcmpl-fake-{len(messages)}",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _answer(messages: list[dict[str, Any]], offered_tools: set[str]) -> dict[str, Any]:
    last = messages[-1]
    if last["role"] == "tool":
        name = _tool_name(messages, last["tool_call_id"])
        return _say(f"{name} returned: {_text(last)}")
    text = _text(last).strip()
    if text == "/roles":
        return _say("roles: " + ",".join(m["role"] for m in messages))
    if text.startswith("/tool "):
        name, _, arguments = text.removeprefix("/tool ").strip().partition(" ")
        if name not in offered_tools:
            return _say(f"tool {name} is not available")
        call = {"id": f"call_{len(messages)}", "type": "function"}
        call["function"] = {"name": name, "arguments": arguments.strip() or "{}"}
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    return _say(f"You said: {text}")


def _say(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": f"{OFFLINE_PREFIX} {text}"}


def _tool_name(messages: list[dict[str, Any]], call_id: str) -> str:
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if call["id"] == call_id:
                return call["function"]["name"]
    return "unknown tool"


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)
