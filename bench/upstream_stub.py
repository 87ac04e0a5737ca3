"""An OpenAI-compatible chat-completions server that answers at once, for load runs.

Standard library only, raw HTTP/1.1 over asyncio streams, so that next to the servers
under test it costs close to nothing: the benchmark measures them, not their upstream.

Every reply names the canaries (see `CANARY`) found anywhere in the request it answers,
so a client can tell whether its turn reached the model mixed with another's:

- a user turn that contains `TOOL_MARKER`, sent with tools, is answered with a call of the
  first tool offered, every required argument set to `TOOL_ARGUMENT`;
- every other request gets the text reply `expected_reply(...)` describes;
- a tool result that does not answer a call of the assistant message before it gets a 400,
  as OpenAI's API gives, since that is how a shared history breaks.

Run it as `python upstream_stub.py --port PORT`.
"""

import argparse
import asyncio
import json
import re
from typing import Any

CANARY = re.compile(r"canary-[0-9a-f]{16}")
TOOL_MARKER = "use a tool"
TOOL_ARGUMENT = "C-1001"
SHOWN_CANARIES = 4


def expected_reply(canary: str, *, after_tool: bool) -> str:
    """What a turn that carried only `canary` is answered with."""
    return _say([canary], after_tool=after_tool)


def _say(canaries: list[str], *, after_tool: bool) -> str:
    shown = " ".join(canaries[:SHOWN_CANARIES])
    return f"{'tool done, ' if after_tool else ''}{len(canaries)} canaries seen: {shown}"


def _completion(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    messages: list[dict[str, Any]] = body["messages"]
    if (broken := _unanswered_tool_result(messages)) is not None:
        return 400, {"error": {"message": broken, "type": "invalid_request_error"}}
    last = messages[-1]
    tools = body.get("tools") or []
    if last["role"] == "user" and tools and TOOL_MARKER in _text(last):
        function = tools[0]["function"]
        required = function.get("parameters", {}).get("required", [])
        call = {
            "id": f"call_{len(messages)}",
            "type": "function",
            "function": {
                "name": function["name"],
                "arguments": json.dumps(dict.fromkeys(required, TOOL_ARGUMENT)),
            },
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
    else:
        canaries = list(dict.fromkeys(CANARY.findall(" ".join(_text(m) for m in messages))))
        reply = _say(canaries, after_tool=last["role"] == "tool")
        message = {"role": "assistant", "content": reply}
    return 200, {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "stub"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _unanswered_tool_result(messages: list[dict[str, Any]]) -> str | None:
    for index, message in enumerate(messages):
        if message["role"] != "tool":
            continue
        previous = next(m for m in reversed(messages[:index]) if m["role"] != "tool")
        call_ids = {call["id"] for call in previous.get("tool_calls") or []}
        if message.get("tool_call_id") not in call_ids:
            return (
                f"messages.[{index}]: messages with role 'tool' must be a response to a "
                "preceding message with 'tool_calls'"
            )
    return None


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            status, answer = _completion(json.loads(await reader.readexactly(length)))
            payload = json.dumps(answer).encode()
            writer.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                % (status, b"OK" if status == 200 else b"Bad Request", len(payload))
                + payload
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client closed its connection
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve_connection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(_main(parser.parse_args().port))
