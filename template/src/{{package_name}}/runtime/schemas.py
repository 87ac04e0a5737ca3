"""The HTTP API's request and response bodies."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant"] = Field(
        description="`user` for the caller's turns, `assistant` for the service's earlier replies."
    )
    content: StrictStr = Field(description="The message text; must not be blank.")

    @field_validator("role", mode="before")
    @classmethod
    def _no_service_roles(cls, role: object) -> object:
        if role in ("system", "developer", "tool", "function"):
            raise ValueError(
                f"role {role!r} is set by the service, not by clients; "
                "send only 'user' and 'assistant' turns"
            )
        return role

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("must not be empty or only whitespace")
        return content


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(
        min_length=1,
        description="The conversation so far, oldest first; the last message is the new user turn.",
    )

    @field_validator("messages")
    @classmethod
    def _ends_with_user_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        return messages


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class ChatResponse(BaseModel):
    reply: str
    request_id: str
    provider: Literal["offline", "openai"] = Field(
        description="`offline` marks replies of the built-in deterministic model."
    )
    model: str
    usage: Usage
    tool_calls: int = Field(description="Tool calls the agent made for this turn.")


class ErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str


class ErrorBody(BaseModel):
    error: ErrorDetail
