"""What is known of the request being answered, for any code that runs inside it.

The request id and the caller are structlog context variables: bound once by the
request middleware (and the API key check), they reach every log line of the request
and every function it calls without being passed along.
"""

import structlog

# Without API keys (auth: none, or development) every caller is this one.
ANONYMOUS_CALLER = "shared"


def current_request_id() -> str:
    return structlog.contextvars.get_contextvars().get("request_id", "")


def current_caller() -> str:
    """Who is calling: the id of the API key used, which scopes what a caller may touch."""
    return structlog.contextvars.get_contextvars().get("api_key_id", ANONYMOUS_CALLER)


def bind(**values: object) -> None:
    """Add `values` to the request's context: its log lines carry them from now on."""
    structlog.contextvars.bind_contextvars(**values)
