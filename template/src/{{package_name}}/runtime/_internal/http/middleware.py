"""The pure ASGI middleware the core installs: request context and the body size limit.

Pure ASGI rather than `BaseHTTPMiddleware`: no extra task per request, and the
contextvars bound while the request runs are still there for the access line.
"""

import re
import time
import uuid
from typing import Protocol

import anyio
import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ApiError, error_response, internal_error

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = structlog.get_logger(__name__)


class ObservedRequest(Protocol):
    def response_started(self, status: int) -> None: ...

    def finished(self, status: int, error: BaseException | None) -> None: ...


class RequestObserver(Protocol):
    """Sees every HTTP request from the outside (the observability feature's traces and
    metrics), once its request id is bound and until its access line is written."""

    def start(self, scope: Scope) -> ObservedRequest: ...


def _client_went_away(error: BaseException) -> bool:
    """Whether `error` is only the response's connection closing under it: a streamed
    response (its keep-alive pings, say) writing to a client that has hung up."""
    if isinstance(error, BaseExceptionGroup):
        return all(_client_went_away(inner) for inner in error.exceptions)
    return isinstance(error, anyio.BrokenResourceError | anyio.ClosedResourceError)


def _incoming_request_id(scope: Scope) -> str | None:
    text = Headers(scope=scope).get(REQUEST_ID_HEADER)
    return text if text is not None and _SANE_REQUEST_ID.fullmatch(text) else None


class RequestContextMiddleware:
    """Request ids, the access log line, and the last-resort 500; outermost of all."""

    def __init__(self, app: ASGIApp, observer: RequestObserver | None = None) -> None:
        self.app = app
        self._observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status: int | None = None
        observed = self._observer.start(scope) if self._observer is not None else None
        failure: BaseException | None = None

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
                if observed is not None:
                    observed.response_started(status)
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as error:
            if _client_went_away(error):
                log.info("client disconnected while the response was sent")
                return
            failure = error
            log.exception("unhandled error")
            if status is None:
                response = error_response(internal_error())
                await response(scope, receive, send_with_request_id)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            if observed is not None:  # after the access line, which it may annotate
                observed.finished(status or 500, failure)
            structlog.contextvars.clear_contextvars()


class BodySizeLimitMiddleware:
    """413 for a body over the limit: at once from `Content-Length`, else as soon as the
    streamed body passes it, so an oversized body is never held in memory whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            response = error_response(ApiError(413, "body_too_large", self._message()))
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_bytes:
                    # Raised into the route while it reads the body; the error handlers
                    # turn it into the same 413 as above.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)

    def _message(self) -> str:
        return f"The request body is larger than the limit of {self._max_bytes} bytes."
