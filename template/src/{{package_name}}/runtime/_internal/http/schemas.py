"""The HTTP API's request and response bodies."""

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    field_validator,
)


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

    @field_validator("content")
    @classmethod
    def _encodable(cls, content: str) -> str:
        # JSON escapes can spell a lone surrogate ("\ud800"), which no UTF-8 text can hold:
        # the model server could never be sent it.
        try:
            content.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"has a lone surrogate (\\u{ord(content[error.start]):04x}) at character "
                f"{error.start}, which is not valid Unicode text"
            ) from None
        return content


def _not_a_path_step(session_id: str) -> str:
    if session_id in (".", ".."):
        # /v1/sessions/.. is /v1 to every URL library: the session could not be read back.
        raise ValueError("must not be '.' or '..', which URLs read as steps of the path")
    return session_id


# The body's `session_id` and the sessions routes' path parameter.
SessionId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,128}$"),
    AfterValidator(_not_a_path_step),
]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(
        min_length=1,
        description="The conversation so far, oldest first, ending with the new user turn; "
        "with `session_id`, only the new messages: the stored ones come first.",
    )
    session_id: SessionId | None = Field(
        None,
        description="Continue this stored conversation (any id the client chooses: up to 128 "
        "letters, digits, `.`, `_`, `-`, but not `.` or `..`). The turn is saved only once it "
        "succeeded. Only services with sessions keep conversations; the others answer 422.",
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


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """For the OpenAPI document: statuses an endpoint may answer with the error body."""
    return {status: {"model": ErrorBody} for status in sorted(statuses)}


# What any chat endpoint may answer, whichever features are installed; a feature that
# adds a status (401, 409) documents it itself.
ERROR_RESPONSES = error_responses(413, 422, 429, 500, 502, 503, 504)
