"""A deterministic OpenAI-compatible chat server: the `offline` model, and a stub for tests.

It answers `POST /v1/chat/completions` from the messages it is sent. What it is asked
to do (its directive) is the newest message from the user, when that is the last one;
for an agent of a team (its system prompt says `You are `NAME` in a team`), it is the
part of the user's message addressed to it (`@NAME: ...`), if the message addresses
anyone. Directives:

- `/tool NAME {"arg": ...}` asks for a call of tool NAME with those arguments (sent
  verbatim, so malformed JSON can be tried too); `/tools NAME {...} && NAME {...}` for
  several calls at once, in one answer;
- `/handoff AGENT` calls the handoff tool `transfer_to_AGENT`; `/ask QUESTION` calls
  `ask_user`, the handoff to the user;
- `/say TEXT` answers with TEXT (the rest of its line);
- `/roles` answers with the roles of all messages received, in order;
- `/transcript` answers with every message received, in order, as `role: text`, so a
  test sees any history that was not the request's own;
- with faults on, `/fault KIND` answers with that fault, for every attempt; `/fault
  KIND*N` only for the first N attempts of that exact directive (see `FAULTS`);
- anything else is echoed back (`You said: ...`), as is the user's message for an agent
  that has no directive.

A tool result is answered with `NAME returned: RESULT`, and so is a user message that
comes right after tool results (decisions on calls that waited for approval). A team's
speaker selection (the selector's prompt) is answered with the agent mentioned as `@NAME`
in the newest message, else with the agent after the last speaker, in the team's order;
with faults on, `/fault bad-speaker` anywhere in the conversation makes it answer with no
agent's name.

A request with `"stream": true` is answered with `chat.completion.chunk` events, a word
at a time, and a usage chunk when `stream_options.include_usage` asks for one. The app's
`state.open_streams` counts the streamed answers whose client is still connected, as a
model server's billing would.

The `offline` provider runs it in-process, so the service's real openai client path
is exercised with no network; `serve fake-upstream` runs it over HTTP for development.
"""

import asyncio
import json
import math
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

OFFLINE_PREFIX = "[offline model]"
# Makes the openai SDK retry after 10 ms instead of its backoff; `retry-after` is what a
# rate-limited client is told.
FAST_RETRY = {"retry-after-ms": "10"}
FAULTS = {
    "429": (429, {"retry-after": "7", **FAST_RETRY}),
    # `retry-after-ms` alone, as some gateways send it; the SDK waits it out before retrying.
    "429-retry-after-ms": (429, {"retry-after-ms": "1500"}),
    "429-retry-after-ms-malformed": (429, {"retry-after-ms": "soon"}),
    "500": (500, FAST_RETRY),
    "503": (503, FAST_RETRY),
    "400": (400, {}),
    "401": (401, {}),
    "404": (404, {}),
}
SLOW_SECONDS = 2.0
HUGE_REPLY_WORDS = 100_000
_FAULT = re.compile(r"/fault (?P<kind>[a-z0-9-]+)(?:\*(?P<times>\d+))?")
_ADDRESSED = re.compile(r"@(\w+):\s*(.*?)\s*(?=@\w+:|$)", re.S)
_TEAM_MEMBER = re.compile(r"You are `(\w+)` in a team")
_SELECTION = re.compile(
    r"The agents:\n(?P<roles>.*?)\n\nThe conversation so far:\n(?P<history>.*)"
    r"\n\nChoose the next speaker from \[(?P<candidates>[^\]]*)\]",
    re.S,
)


def create_fake_upstream(
    record: list[dict[str, Any]] | None = None, *, faults: bool = False
) -> FastAPI:
    """Build the server; when `record` is given, every request body is appended to it.

    `/fault` commands work only with `faults=True` (tests, `fake-upstream`): the offline
    model must not let a user's message make the service fail.
    """
    app = FastAPI(
        title="Fake OpenAI-compatible upstream",
        openapi_url=None,
        # A stand-in for a model server makes no spans: in tests they would join the service's.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.open_streams = 0
    attempts: Counter[str] = Counter()

    async def counted(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        app.state.open_streams += 1
        try:
            async for chunk in chunks:
                yield chunk
        finally:  # the stream ended, or its client went away
            app.state.open_streams -= 1

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        if record is not None:
            record.append(body)
        directive = _directive(body["messages"]) or ""
        fault = _FAULT.match(directive) if faults else None
        kind = None
        if fault:
            attempts[directive] += 1
            times = fault["times"]
            if times is None or attempts[directive] <= int(times):
                kind = fault["kind"]
        if kind in FAULTS:
            status, headers = FAULTS[kind]
            error = {"error": {"message": f"injected {kind}", "type": "fault", "code": kind}}
            return JSONResponse(error, status_code=status, headers=headers)
        if kind == "malformed":
            return Response('{"choices": [', media_type="application/json")
        completion = _completion(body, faults=faults)
        passing = (None, "slow", "drop", "endless", "bad-speaker")  # handled further on
        if kind not in passing and not _spoil(completion, kind, body):
            return JSONResponse({"error": {"message": f"unknown fault {kind}"}}, status_code=418)
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _stream_chunks(completion, usage, kind)
            return StreamingResponse(counted(chunks), media_type="text/event-stream")
        if kind == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if kind == "drop":
            return StreamingResponse(_drop_mid_body(), media_type="application/json")
        return JSONResponse(completion)

    return app


def _spoil(completion: dict[str, Any], kind: str, body: dict[str, Any]) -> bool:
    """Turn a good completion into the faulty one `kind` names; False for an unknown kind."""
    message = completion["choices"][0]["message"]
    if kind == "empty":
        message["content"] = None
    elif kind == "no-choices":
        completion["choices"] = []
    elif kind == "huge":
        message["content"] = "la " * HUGE_REPLY_WORDS
    elif kind == "bad-tool-args" and body.get("tools"):
        name = body["tools"][0]["function"]["name"]
        call = {"id": "call_bad", "type": "function"}
        call["function"] = {"name": name, "arguments": "{not json"}
        message.update(content=None, tool_calls=[call])
        completion["choices"][0]["finish_reason"] = "tool_calls"
    else:
        return False
    return True


async def _drop_mid_body() -> AsyncIterator[bytes]:
    yield b'{"id": "chatcmpl-dropped", '
    raise ConnectionAbortedError("injected: connection dropped mid-answer")


async def _stream_chunks(
    completion: dict[str, Any], include_usage: bool, fault: str | None
) -> AsyncIterator[bytes]:
    """The completion as `chat.completion.chunk` events: a word at a time, as models do.

    `slow` pauses after the first piece and `drop` breaks the connection there, so that
    the client has already seen part of the answer; `endless` goes on sending until the
    client hangs up.
    """
    envelope = {key: completion[key] for key in ("id", "created", "model")}
    envelope["object"] = "chat.completion.chunk"
    for index, choice in enumerate(_chunk_choices(completion)):
        yield _server_sent({**envelope, "choices": [choice]})
        if index == 1 and fault == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if index == 1 and fault == "drop":
            raise ConnectionAbortedError("injected: connection dropped mid-stream")
        while index == 1 and fault == "endless":
            await asyncio.sleep(0.05)
            more = {**choice, "delta": {"content": " more"}}
            yield _server_sent({**envelope, "choices": [more]})
    if include_usage:
        yield _server_sent({**envelope, "choices": [], "usage": completion["usage"]})
    yield b"data: [DONE]\n\n"


def _server_sent(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _chunk_choices(completion: dict[str, Any]) -> list[dict[str, Any]]:
    if not completion["choices"]:
        return []
    choice = completion["choices"][0]
    message = choice["message"]
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": piece} for piece in re.findall(r"\s*\S+", message["content"] or "")]
    for index, call in enumerate(message.get("tool_calls") or []):
        deltas.append({"tool_calls": [{"index": index, **call}]})
    chunks = [{"index": 0, "delta": delta, "finish_reason": None} for delta in deltas]
    chunks.append({"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]})
    return chunks


def _completion(body: dict[str, Any], *, faults: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = body["messages"]
    selection = _SELECTION.search(_text(messages[0]))
    if selection is not None:
        message = {"role": "assistant", "content": _next_speaker(selection, faults=faults)}
    else:
        offered_tools = {t["function"]["name"] for t in body.get("tools", [])}
        message = _answer(messages, offered_tools)
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


def _directive(messages: list[dict[str, Any]]) -> str | None:
    """What this call is asked to do; None when it is to echo or answer tool results."""
    last = messages[-1]
    human = _newest_from_user(messages)
    if human is None or last["role"] == "tool":
        return None
    text = _text(human).strip()
    addressed = dict(_ADDRESSED.findall(text))
    if addressed:
        member = _TEAM_MEMBER.search(_text(messages[0]))
        return addressed.get(member[1]) if member else None
    return text if last is human else None


def _newest_from_user(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    # Teammates' messages are user messages too, but carry the agent's name.
    for message in reversed(messages):
        if message["role"] == "user" and message.get("name", "user") == "user":
            return message
    return None


def _answer(messages: list[dict[str, Any]], offered_tools: set[str]) -> dict[str, Any]:
    results = _trailing_tool_results(messages[:-1] if messages[-1]["role"] == "user" else messages)
    if messages[-1]["role"] == "tool" or (results and messages[-1] is _newest_from_user(messages)):
        return _say("; ".join(f"{name} returned: {text}" for name, text in results))
    text = _directive(messages)
    if text is None:
        human = _newest_from_user(messages)
        return _say(f"You said: {_text(human).strip() if human else ''}")
    if text.startswith("/say "):
        return _say(text.removeprefix("/say ").partition("\n")[0])
    if text == "/roles":
        return _say("roles: " + ",".join(m["role"] for m in messages))
    if text == "/transcript":
        return _say("transcript: " + " | ".join(f"{m['role']}: {_text(m)}" for m in messages))
    if text.startswith("/handoff "):
        target = text.removeprefix("/handoff ")
        return _call(messages, offered_tools, (f"transfer_to_{target}", "{}"))
    if text.startswith("/ask "):
        question = json.dumps({"question": text.removeprefix("/ask ").strip()})
        return _call(messages, offered_tools, ("ask_user", question))
    if text.startswith(("/tool ", "/tools ")):
        directive, _, requested = text.partition(" ")
        calls = requested.split(" && ") if directive == "/tools" else [requested]
        named = [call.strip().partition(" ") for call in calls]
        return _call(messages, offered_tools, *((n, a.strip() or "{}") for n, _, a in named))
    return _say(f"You said: {text}")


def _call(
    messages: list[dict[str, Any]], offered_tools: set[str], *calls: tuple[str, str]
) -> dict[str, Any]:
    tool_calls = []
    for index, (name, arguments) in enumerate(calls):
        name = name.strip()
        if name not in offered_tools:
            return _say(f"tool {name} is not available")
        call = {"id": f"call_{len(messages)}" + (f"_{index}" if index else ""), "type": "function"}
        call["function"] = {"name": name, "arguments": arguments}
        tool_calls.append(call)
    return {"role": "assistant", "content": None, "tool_calls": tool_calls}


def _trailing_tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The tool results at the end of `messages`, oldest first, by tool name."""
    results = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        results.append((_tool_name(messages, message["tool_call_id"]), _text(message)))
    # A handoff's result is no finding to report: after one, the user's message is news.
    if any(name == "ask_user" or name.startswith("transfer_to_") for name, _ in results):
        return []
    return results[::-1]


def _next_speaker(selection: re.Match[str], *, faults: bool) -> str:
    """A selector's choice: the agent mentioned as `@NAME` in the newest message, else the
    agent after the last speaker, in the team's order."""
    history = selection["history"]
    if faults and "/fault bad-speaker" in history:
        return "I cannot tell who should speak."
    order = re.findall(r"^(\w+):", selection["roles"], re.M)
    candidates = re.findall(r"'(\w+)'", selection["candidates"])
    entries = [
        (name, text)
        for name, text in re.findall(r"^(\w+): (.*)$", history, re.M)
        if name in order or name == "user"
    ]
    last_speaker, last_text = entries[-1] if entries else ("user", "")
    for name in candidates:
        if f"@{name}" in last_text:
            return name
    start = order.index(last_speaker) + 1 if last_speaker in order else 0
    for name in order[start:] + order[:start]:
        if name in candidates:
            return name
    return candidates[0]


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
