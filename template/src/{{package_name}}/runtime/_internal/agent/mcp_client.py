"""The MCP client: one server's session over the `mcp` SDK, kept for the whole process, and
what the server's tools answer. Engine-neutral: each engine wraps `McpServer.call` as a tool
of its own framework."""

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any, Literal, TypedDict

import httpx
import structlog

from .tools import limit_size, tool_error_json

log = structlog.get_logger(__name__)


class McpToolSchema(TypedDict):
    """One tool as the server lists it, under the server's own name for it."""

    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema


McpServerState = Literal["starting", "ready", "unavailable"]

# What a stdio server writes to its stderr becomes log records: each line cut to this many
# characters, a burst of so many lines, then so many a second; lines beyond are counted.
_STDERR_LINE_CHARS = 1000
_STDERR_BURST_LINES = 100
_STDERR_LINES_PER_SECOND = 10.0


class _StderrRelay:
    """A stdio MCP server's stderr, read from a pipe into log records that carry the
    server's name, rather than written raw into the service's own stderr."""

    def __init__(self, server: str) -> None:
        self._server = server
        read_end, write_end = os.pipe()
        self.sink = os.fdopen(write_end, "w")  # the server's process gets it as its stderr
        self._reading = asyncio.create_task(self._relay(os.fdopen(read_end, "rb")))
        self._tokens = float(_STDERR_BURST_LINES)
        self._refilled = time.monotonic()
        self._dropped = 0

    async def __aenter__(self) -> "_StderrRelay":
        return self

    def started(self) -> None:
        """The server's process has its copy of the pipe: the reader sees the end of it
        when the process ends."""
        self.sink.close()

    async def __aexit__(self, *_: object) -> None:
        self.sink.close()
        # The last lines; a child the server left behind may hold the pipe open, though.
        with suppress(TimeoutError):
            await asyncio.wait_for(self._reading, 5)

    async def _relay(self, pipe: Any) -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        unfinished = b""
        try:
            while chunk := await reader.read(65536):
                *lines, unfinished = (unfinished + chunk).split(b"\n")
                # Only the head of a line is logged: an endless line cannot fill the memory.
                unfinished = unfinished[: 4 * _STDERR_LINE_CHARS]
                for line in lines:
                    self._log(line)
            if unfinished:
                self._log(unfinished)
        finally:
            transport.close()
            if self._dropped:
                self._log_dropped()

    def _log(self, raw: bytes) -> None:
        now = time.monotonic()
        self._tokens = min(
            _STDERR_BURST_LINES,
            self._tokens + (now - self._refilled) * _STDERR_LINES_PER_SECOND,
        )
        self._refilled = now
        if self._tokens < 1:
            self._dropped += 1
            return
        self._tokens -= 1
        if self._dropped:
            self._log_dropped()
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if len(line) > _STDERR_LINE_CHARS:
            line = line[:_STDERR_LINE_CHARS] + " [cut]"
        log.info("mcp server stderr", server=self._server, line=line)

    def _log_dropped(self) -> None:
        log.warning("mcp server stderr lines dropped", server=self._server, lines=self._dropped)
        self._dropped = 0


class McpServer:
    """One MCP server's session, kept for the whole process and started again after a
    failure. Its tools answer the model as the service's own do: JSON text within the size
    cap, a structured error when the server fails, hangs or is gone, never an exception.

    The session is held by the `mcp` SDK's client in a task of its own (`_hold`), since the
    SDK's transports must be entered and left in one task; calls are made from any task.
    """

    def __init__(
        self,
        name: str,
        *,
        command: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
        start_timeout_seconds: float,
        call_timeout_seconds: float,
        max_chars: int,
    ) -> None:
        self.name = name
        self._command = command
        self._args = list(args)
        self._env = dict(env or {})
        self._url = url or ""
        self._headers = dict(headers or {})
        self._start_timeout = start_timeout_seconds
        self._timeout = call_timeout_seconds
        self._max_chars = max_chars
        self._session: Any = None
        self._holder: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._starting = asyncio.Lock()
        self.state: McpServerState = "starting"

    async def start(self) -> list[McpToolSchema]:
        """Connect and list the server's tools; raises if the server cannot be reached."""
        listed: asyncio.Future[list[McpToolSchema]] = asyncio.get_running_loop().create_future()
        self._stopping = asyncio.Event()
        self._holder = asyncio.create_task(self._hold(listed), name=f"mcp server {self.name}")
        try:
            tools = await asyncio.wait_for(listed, self._start_timeout)
        except BaseException:
            await self.stop()
            raise
        self.state = "ready"
        return tools

    async def _hold(self, listed: "asyncio.Future[list[McpToolSchema]]") -> None:
        """Open the session, list the tools into `listed`, and keep the session until
        `stop`, or until the server goes."""
        from mcp import ClientSession  # only services with MCP tools have the `mcp` package

        try:
            async with AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                tools = []
                cursor = None
                while True:
                    page = await session.list_tools(cursor)
                    tools += [
                        McpToolSchema(
                            name=tool.name,
                            description=tool.description or "",
                            parameters=tool.inputSchema,
                        )
                        for tool in page.tools
                    ]
                    if not (cursor := page.nextCursor):
                        break
                self._session = session
                listed.set_result(tools)
                await self._stopping.wait()
        except BaseException as error:
            if not listed.done():
                listed.set_exception(error)
            elif not isinstance(error, asyncio.CancelledError):
                log.info("mcp server session ended", server=self.name, error=repr(error))
        finally:
            self._session = None

    @asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client

        if self._command is None:
            # No read limit of its own: the server's event stream idles between messages,
            # and each call has ours.
            timeout = httpx.Timeout(self._start_timeout, read=None)
            async with (
                httpx.AsyncClient(headers=self._headers, timeout=timeout) as http,
                streamable_http_client(self._url, http_client=http) as (read, write, _),
            ):
                yield read, write
            return
        parameters = StdioServerParameters(
            command=self._command, args=self._args, env=self._env or None
        )
        async with (
            _StderrRelay(self.name) as stderr,
            stdio_client(parameters, errlog=stderr.sink) as (read, write),
        ):
            stderr.started()
            yield read, write

    async def stop(self) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        self._stopping.set()
        if self._session is None:  # still starting: there is no session to close cleanly
            holder.cancel()
        done, _ = await asyncio.wait([holder], timeout=self._timeout)
        if not done:  # a crashed server cannot be stopped cleanly
            holder.cancel()
            log.info("mcp server not stopped cleanly", server=self.name)

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        """The tool's answer as the model gets it, and whether it failed."""
        async with self._starting:  # one new session, however many calls find none
            if self._session is None:
                try:
                    await self.start()
                except Exception as error:
                    self.state = "unavailable"
                    log.warning("mcp server unavailable", server=self.name, error=repr(error))
            session = self._session
        if session is None:
            return self._error("mcp_unavailable", "The tool's server cannot be reached."), True
        try:
            result = await asyncio.wait_for(session.call_tool(tool, dict(arguments)), self._timeout)
        except TimeoutError:
            # Hung, or gone without a word: the next call starts a new session either way.
            log.warning("mcp tool timed out", server=self.name, tool=tool)
            await self.stop()
            message = f"The tool did not answer within {self._timeout} seconds."
            return self._error("timeout", message), True
        except Exception as error:
            return await self._lost(tool, error)
        text = "\n".join(
            part.text if part.type == "text" else part.model_dump_json() for part in result.content
        )
        if result.isError:
            log.info("mcp tool reported an error", server=self.name, tool=tool)
            return self._error("tool_error", text, retryable=False), True
        return limit_size(text, self._max_chars), False

    def reject_arguments(self, tool: str, problem: str) -> str:
        """The error for arguments that are no JSON object: the server is not asked, so its
        session stays up."""
        # Cut for the log too: the model writes the arguments, at any size.
        shown = problem[:200]
        log.warning("mcp tool arguments rejected", server=self.name, tool=tool, problem=shown)
        return self._error("invalid_arguments", problem)

    async def _lost(self, tool: str, error: BaseException) -> tuple[str, bool]:
        """The session broke: the next call starts a new one."""
        log.warning("mcp server lost", server=self.name, tool=tool, error=repr(error))
        self.state = "unavailable"
        await self.stop()
        return self._error("mcp_unavailable", "The tool's server stopped answering."), True

    def _error(self, type: str, message: str, *, retryable: bool = True) -> str:
        return tool_error_json(type, message, retryable=retryable, max_chars=self._max_chars)
