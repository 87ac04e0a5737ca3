"""One error shape for every failure: `{"error": {"type", "message", "request_id"}}`."""

import math
import re
from collections.abc import Mapping

import openai
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .context import bind, current_request_id
from .project import ENV_PREFIX

log = structlog.get_logger(__name__)


class ApiError(Exception):
    """A failure with a status and an error type that a client can act on."""

    def __init__(
        self, status: int, type: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        request_id = current_request_id()
        return {"error": {"type": self.type, "message": self.message, "request_id": request_id}}


def internal_error() -> ApiError:
    """What a client is told of a bug: nothing it could act on, nothing that leaks."""
    return ApiError(500, "internal_error", "The service failed unexpectedly.")


def error_response(error: ApiError) -> JSONResponse:
    bind(error_type=error.type)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def upstream_error(error: Exception) -> ApiError:
    """Map what the openai SDK raises once its retries are spent to an honest status."""
    if isinstance(error, openai.APITimeoutError):
        return ApiError(504, "upstream_timeout", "The model server did not answer in time.")
    if isinstance(error, openai.APIConnectionError):
        return ApiError(502, "upstream_unreachable", "The model server could not be reached.")
    if isinstance(error, openai.RateLimitError):
        retry_after = _retry_after_seconds(error.response.headers)
        headers = {"Retry-After": retry_after} if retry_after else None
        return ApiError(429, "upstream_rate_limited", "The model server is rate limiting.", headers)
    if isinstance(
        error, openai.AuthenticationError | openai.PermissionDeniedError | openai.NotFoundError
    ):
        log.error(
            "model server refused the service's configuration: check "
            f"{ENV_PREFIX}MODEL_API_KEY, {ENV_PREFIX}MODEL_BASE_URL and {ENV_PREFIX}MODEL_NAME",
            upstream_status=error.status_code,
        )
        return ApiError(500, "upstream_misconfigured", "The service is misconfigured.")
    if isinstance(error, openai.APIStatusError):
        return ApiError(
            502, "upstream_error", f"The model server answered with status {error.status_code}."
        )
    return ApiError(
        502, "upstream_bad_answer", "The model server gave an answer the service cannot use."
    )


def _retry_after_seconds(headers: Mapping[str, str]) -> str | None:
    """The upstream's `Retry-After` as sent, else its `retry-after-ms` in whole seconds."""
    if seconds := headers.get("retry-after"):
        return seconds
    if milliseconds := headers.get("retry-after-ms"):
        try:
            wait = float(milliseconds) / 1000
        except ValueError:
            return None
        # `inf`, `nan` and negative numbers parse, but name no wait a client could keep.
        return str(math.ceil(wait)) if 0 <= wait < math.inf else None
    return None


_NAMES_ITS_FIELD = re.compile(r"[a-z_][a-z_0-9.]*: ")


def _validation_message(error: RequestValidationError) -> str:
    problems = []
    for detail in error.errors():
        if detail["type"] == "json_invalid":
            problems.append(f"body: not valid JSON ({detail['ctx']['error']})")
            continue
        location = ".".join(str(part) for part in detail["loc"] if part != "body")
        message = detail["msg"].removeprefix("Value error, ")
        if not location and _NAMES_ITS_FIELD.match(message):
            problems.append(message)  # a check of the whole body, naming the field at fault
        else:
            problems.append(f"{location or 'body'}: {message}")
    return "; ".join(problems)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(422, "invalid_request", _validation_message(error)))

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, error: HTTPException) -> JSONResponse:
        types = {
            400: "invalid_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
        }
        error_type = types.get(error.status_code, "http_error")
        return error_response(
            ApiError(error.status_code, error_type, str(error.detail), error.headers)
        )
