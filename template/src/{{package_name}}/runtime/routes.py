"""HTTP routes: health, readiness and chat."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from .errors import ApiError, current_request_id
from .schemas import ChatRequest, ChatResponse, ErrorBody
from .service import ChatService

router = APIRouter()

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (413, 422, 429, 500, 502, 503, 504)
}


def chat_service(request: Request) -> ChatService:
    service: ChatService | None = getattr(request.app.state, "chat", None)
    if service is None:
        raise ApiError(503, "not_ready", "The service is still starting.", {"Retry-After": "1"})
    return service


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: start-up has finished and the model client is built")
async def readyz(_: Annotated[ChatService, Depends(chat_service)]) -> dict[str, str]:
    return {"status": "ready"}


@router.post("/v1/chat", summary="Answer the newest user turn", responses=ERROR_RESPONSES)
async def chat(
    body: ChatRequest, request: Request, service: Annotated[ChatService, Depends(chat_service)]
) -> ChatResponse:
    return await service.answer(body, current_request_id(), request.is_disconnected)
