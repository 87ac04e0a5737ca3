"""Helpers for testing the service: call a tool, run the service in-process, or serve an app
over real HTTP."""

import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self

import httpx
import uvicorn

from ..agent.specs import AgentOrTeam
from ..agent.tools import ServiceTool
from ..features import RuntimeSettings
from ..http.app import create_app
from ..settings import CoreSettings


async def call_tool(tool: ServiceTool, /, **arguments: object) -> Any:
    """What the model would receive from calling `tool` with `arguments`, parsed from JSON,
    cut as the default `TOOL_RESULT_MAX_CHARS` cuts it."""
    max_chars = CoreSettings.model_fields["tool_result_max_chars"].default
    return json.loads(await tool.invoke(arguments, max_chars=max_chars))


@asynccontextmanager
async def serve(settings: RuntimeSettings, served: AgentOrTeam) -> AsyncIterator[httpx.AsyncClient]:
    """The service, started and stopped through its lifespan, behind an in-process client."""
    app = create_app(settings, served)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


def chat_body(*contents: str) -> dict[str, Any]:
    """A conversation of alternating user and assistant turns that ends with a user turn."""
    count = len(contents)
    return {
        "messages": [
            {"role": "user" if (count - index) % 2 else "assistant", "content": text}
            for index, text in enumerate(contents)
        ]
    }


class ThreadedServer:
    """An ASGI app served over real HTTP on 127.0.0.1, on a free port, in a background thread.

    With `lifespan`, the app starts and stops in that thread, as it does under `serve`: what
    its start-up builds (the model client) is then used on the loop that built it.
    """

    def __init__(self, app: Any, *, lifespan: bool = False) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            lifespan="on" if lifespan else "off",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start within 10 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
