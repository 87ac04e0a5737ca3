"""How the service reaches its model: the options of an `openai.AsyncOpenAI`-compatible
client, which every engine's model client is built from."""

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import import_module
from typing import Any

import httpx
import openai

from ..settings import CoreSettings
from .fake_upstream import create_fake_upstream
from .instrumentation import Instrumentation

_OFFLINE_BASE_URL = "http://offline-model.invalid/v1"
# What a guard keeps of an answer's body: a completion whole, or a stream's end, which
# carries its usage. A longer body is cut at the front.
_KEPT_BODY_BYTES = 1 << 20


class CallCut(Enum):
    """How a model call ended without an answer read whole."""

    NOT_SERVED = "not_served"  # the server refused it (an error status) or was never reached
    CUT_OFF = "cut_off"  # sent, then given up (a timeout, the turn cancelled): tokens may be spent


# How a model call ended, for its guard: the answer's body once read whole, or how it was cut.
# Synchronous, so that no cancellation can cut it short: a guard with I/O to do queues it.
CallEnd = Callable[[bytes | CallCut], None]
# A feature's hold on every chat completion (`Extensions.call_guard`): given the request
# before it is sent, it raises to refuse it (`ModelCallRefused`), else returns what is told
# how the call ended. Each attempt of the SDK's retries is a call of its own.
CallGuard = Callable[[httpx.Request], Awaitable[CallEnd]]


@dataclass(frozen=True)
class UpstreamOptions:
    """The model server, and how to talk to it; the openai SDK does the retries and timeouts."""

    model: str
    base_url: str | None  # None: api.openai.com
    api_key: str
    max_retries: int
    timeout: float
    max_tokens: int | None  # sent with every call only when MODEL_SEND_MAX_TOKENS is set
    http_client: httpx.AsyncClient


def upstream_options(
    settings: CoreSettings, instrumentation: Instrumentation, call_guard: CallGuard | None = None
) -> UpstreamOptions:
    """The options of the process-wide model client: make them in the app's lifespan, since
    the HTTP client is bound to the event loop it is first used on."""
    if settings.model_provider == "offline":
        transport = httpx.ASGITransport(app=create_fake_upstream(), raise_app_exceptions=False)
        http_client = httpx.AsyncClient(transport=transport)
        base_url: str | None = _OFFLINE_BASE_URL
        api_key = "offline"
    else:
        http_client = openai.DefaultAsyncHttpxClient()
        base_url = None if settings.model_base_url is None else str(settings.model_base_url)
        key = settings.model_api_key
        # Local servers such as Ollama take no key, but the SDK insists on one.
        api_key = key.get_secret_value() if key else "unused"
    # The SDK retries below the engine, where no result shows it: each attempt is seen here.
    attempt_hooks = [instrumentation.upstream_attempt] if instrumentation.upstream_attempt else []
    http_client.event_hooks = {"request": attempt_hooks, "response": [_note_open_answer]}
    if call_guard is not None:
        _guard_transports(http_client, call_guard)
    return UpstreamOptions(
        model=settings.model_label,
        base_url=base_url,
        api_key=api_key,
        max_retries=settings.model_max_retries,
        timeout=settings.model_timeout_seconds,
        max_tokens=settings.reply_reserve_tokens if settings.model_send_max_tokens else None,
        http_client=http_client,
    )


# The model answers of the run in this context that may still be open (`hanging_up_answers`).
_run_answers: ContextVar["weakref.WeakSet[Any] | None"] = ContextVar("run_answers", default=None)


async def _note_open_answer(response: Any) -> None:
    if (answers := _run_answers.get()) is not None:
        answers.add(response)


@asynccontextmanager
async def hanging_up_answers() -> AsyncIterator[None]:
    """Close, when the block ends, every model answer opened within it and still open.

    An engine may leave a streamed answer to the garbage collector: AutoGen does when a
    cancellation lands between two chunks. The connection would stay open until a
    collection, the model server generating (and billing) all the while, and a budget's
    reservation unsettled.
    """
    answers: weakref.WeakSet[Any] = weakref.WeakSet()
    token = _run_answers.set(answers)
    try:
        yield
    finally:
        _run_answers.reset(token)
        for response in list(answers):
            await response.aclose()


def _guard_transports(client: Any, guard: CallGuard) -> None:
    """Put `guard` on every transport of `client`, the ones it mounted for proxies named in
    the environment too. httpx has no public way to wrap the transports a client made
    itself; the attributes are the same in httpx and httpx2 (the openai SDK's)."""
    client._transport = _GuardedTransport(client._transport, guard)
    client._mounts = {
        pattern: None if transport is None else _GuardedTransport(transport, guard)
        for pattern, transport in client._mounts.items()
    }


class _GuardedTransport:
    """A transport of httpx or httpx2 that tells the guard of each chat completion before
    it is sent and once its answer is read, failed or abandoned."""

    def __init__(self, inner: Any, guard: CallGuard) -> None:
        self._inner = inner
        self._guard = guard
        # The transport's own library: its errors and its stream class are that library's.
        self._library = import_module(type(inner).__module__.partition(".")[0])

    async def handle_async_request(self, request: Any) -> Any:
        if not request.url.path.endswith("/chat/completions"):
            return await self._inner.handle_async_request(request)
        ended = await self._guard(request)
        try:
            response = await self._inner.handle_async_request(request)
        except (self._library.ConnectError, self._library.ConnectTimeout):
            # No connection, so the request never left: nothing was spent. Charging it would
            # drain every key's budget, attempt by attempt, while the model server is down.
            ended(CallCut.NOT_SERVED)
            raise
        except BaseException:
            ended(CallCut.CUT_OFF)
            raise
        if not 200 <= response.status_code < 300:
            ended(CallCut.NOT_SERVED)  # the SDK reads the error, may try again
            return response
        # Of the transport's own library, as the reader of the response checks the type.
        stream_class = _watched_stream_class(self._library.AsyncByteStream)
        response.stream = stream_class(response.stream, ended)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> "_GuardedTransport":
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._inner.__aexit__(*exc_info)


@cache
def _watched_stream_class(base: type) -> type:
    class WatchedStream(base):  # type: ignore[misc, valid-type]
        """An answer's body as the client reads it, kept (its end) for the call's guard."""

        def __init__(self, inner: Any, ended: CallEnd) -> None:
            self._inner = inner
            self._ended: CallEnd | None = ended
            self._body = bytearray()

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._inner:
                self._body += chunk
                if len(self._body) > 2 * _KEPT_BODY_BYTES:
                    del self._body[:-_KEPT_BODY_BYTES]
                yield chunk
            self._end(bytes(self._body[-_KEPT_BODY_BYTES:]))

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._end(CallCut.CUT_OFF)  # unless read whole: the client gave up on it

        def _end(self, body: bytes | CallCut) -> None:
            ended, self._ended = self._ended, None
            if ended is not None:
                ended(body)

    return WatchedStream
