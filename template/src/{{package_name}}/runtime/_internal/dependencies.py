"""The FastAPI dependencies of the routes: what start-up built, fetched per request.

All async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.
"""

from fastapi import Request

from .agent.conversation import Conversations
from .agent.service import ChatService
from .errors import ApiError


def _not_ready() -> ApiError:
    return ApiError(503, "not_ready", "The service is still starting.", {"Retry-After": "1"})


async def chat_service(request: Request) -> ChatService:
    service: ChatService | None = getattr(request.app.state, "chat", None)
    if service is None:
        raise _not_ready()
    return service


async def conversations(request: Request) -> Conversations:
    """Where conversations live: with the client, or in the sessions feature's store."""
    found: Conversations | None = getattr(request.app.state, "conversations", None)
    if found is None:
        raise _not_ready()
    return found
