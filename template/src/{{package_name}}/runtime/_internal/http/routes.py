"""The core's routes: health, readiness and chat."""

import inspect
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from ..agent.conversation import Conversations
from ..agent.service import ChatService
from ..contract import ERROR_RESPONSES, ChatBody, ChatResponse
from ..dependencies import chat_service, conversations
from ..errors import ApiError
from ..extensions import NotReady, extensions

router = APIRouter()


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: start-up has finished and the model client is built")
async def readyz(
    request: Request, _: Annotated[ChatService, Depends(chat_service)]
) -> dict[str, object]:
    reports, missing = {}, []
    for name, report in extensions(request.app).readiness.items():
        try:
            answer = report()
            reports[name] = await answer if inspect.isawaitable(answer) else answer
        except NotReady as error:
            missing.append(str(error))
    if missing:
        raise ApiError(503, "not_ready", "; ".join(missing), {"Retry-After": "5"})
    return {"status": "ready", **reports}


@router.post("/v1/chat", summary="Answer the newest user turn", responses=ERROR_RESPONSES)
async def chat(
    body: ChatBody,
    request: Request,
    service: Annotated[ChatService, Depends(chat_service)],
    conversation_store: Annotated[Conversations, Depends(conversations)],
) -> ChatResponse:
    return await service.answer(body, conversation_store, request.is_disconnected)
