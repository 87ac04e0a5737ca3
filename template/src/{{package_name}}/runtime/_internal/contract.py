"""The HTTP API's request and response bodies."""

from typing import Annotated, Any, Literal

from fastapi import Body
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from .project import FEATURES


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


class Approval(BaseModel):
    """A person's decision on a tool call that waits for approval."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="The call's `id`, from `pending_tool_calls`."
    )
    decision: Literal["approve", "reject"]
    arguments: Annotated[str, StringConstraints(max_length=100_000)] | None = Field(
        None,
        description="With `approve`: the arguments to run the tool with instead of the "
        "model's, as a JSON object in text, like `pending_tool_calls[].arguments`.",
    )
    reason: Annotated[str, StringConstraints(max_length=2_000)] | None = Field(
        None, description="With `reject`: why, for the model to tell the user."
    )

    @model_validator(mode="after")
    def _fields_fit_the_decision(self) -> "Approval":
        if self.decision == "reject" and self.arguments is not None:
            raise ValueError("arguments edit an approved call; a rejection takes a reason")
        if self.decision == "approve" and self.reason is not None:
            raise ValueError("a reason goes with a rejection; an approval takes arguments")
        return self


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(
        default_factory=list,
        description="The conversation so far, oldest first, ending with the new user turn; "
        "with `session_id`, only the new messages: the stored ones come first. Empty when "
        "the request carries `approvals`.",
    )
    session_id: SessionId | None = Field(
        None,
        description="Continue this stored conversation (any id the client chooses: up to 128 "
        "letters, digits, `.`, `_`, `-`, but not `.` or `..`). The turn is saved only once it "
        "succeeded. Only services with sessions keep conversations; the others answer 422.",
    )
    approvals: list[Approval] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Decisions on every call of the session's `pending_tool_calls`: the "
        "turn that paused for them goes on.",
    )

    @field_validator("messages")
    @classmethod
    def _ends_with_user_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages and messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        return messages

    @model_validator(mode="after")
    def _a_turn_or_decisions(self) -> "ChatRequest":
        if self.approvals is not None:
            if self.messages:
                raise ValueError(
                    "send approvals without messages: the paused turn goes on first, and "
                    "the next message can follow it"
                )
            if self.session_id is None:
                raise ValueError("approvals go on with a paused session turn: set session_id")
            ids = [approval.id for approval in self.approvals]
            if len(set(ids)) != len(ids):
                raise ValueError("approvals: each call id may be decided once")
            return self
        if not self.messages:
            raise ValueError(
                "messages: required, with at least 1 message, unless the request carries approvals"
            )
        return self


def chat_examples() -> dict[str, dict[str, Any]]:
    """The bodies the API docs page offers to "Try it out", each one answered as it stands by
    this service: a `session_id` only where sessions are kept, and no `approvals`, which only
    a turn paused for them can take."""
    hello = {"role": "user", "content": "Hello"}
    examples: dict[str, dict[str, Any]] = {
        "new": {"summary": "A new conversation", "value": {"messages": [hello]}},
        "history": {
            "summary": "A conversation the client keeps: earlier turns first",
            "value": {
                "messages": [
                    hello,
                    {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "What can you do?"},
                ]
            },
        },
    }
    if "sessions" in FEATURES:
        examples["session"] = {
            "summary": "A turn of a conversation the service keeps",
            "value": {"session_id": "docs-example", "messages": [hello]},
        }
    return examples


# A chat route's body, with the examples above in the OpenAPI document.
ChatBody = Annotated[ChatRequest, Body(openapi_examples=chat_examples())]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class TurnMessage(BaseModel):
    """A message the agents posted during the turn."""

    source: str = Field(description="The agent that posted it.")
    type: Literal["text", "tool_call", "tool_result", "handoff"]
    content: str | None = Field(
        description="The text; a tool call's JSON arguments or a tool's result (only with "
        "`RESPONSE_TOOL_DETAILS` on, else null); a handoff's message."
    )
    name: str | None = Field(None, description="The tool, or the agent handed over to.")
    call_id: str | None = None
    is_error: bool | None = Field(None, description="For a tool result: whether it failed.")


class PendingToolCall(BaseModel):
    id: str
    name: str
    arguments: str = Field(description="The model's arguments: a JSON object, as text.")


# `awaiting_frontend_tools`: only an AG-UI client offers frontend tools, and only it goes on.
TurnStatus = Literal["completed", "awaiting_input", "awaiting_approval", "awaiting_frontend_tools"]
StopReason = Literal[
    "reply",
    "max_tool_rounds",
    "max_messages",
    "token_budget",
    "budget_exhausted",
    "deadline",
    "awaiting_input",
    "awaiting_approval",
    "awaiting_frontend_tools",
]


class ChatResponse(BaseModel):
    reply: str = Field(description="The answer; with `awaiting_input`, the question for the user.")
    status: TurnStatus = Field(
        description="`awaiting_input`: the next message on the session answers `reply`; "
        "`awaiting_approval`: the next request on the session carries `approvals`."
    )
    stop_reason: StopReason = Field(
        description="What ended the turn: a reply, a question, or the limit it reached."
    )
    request_id: str
    provider: Literal["offline", "openai"] = Field(
        description="`offline` marks replies of the built-in deterministic model."
    )
    model: str
    usage: Usage = Field(description="Tokens of every model call of the turn, summed.")
    tool_calls: int = Field(description="Tool calls the agents made for this turn.")
    messages: list[TurnMessage] = Field(description="What the agents posted, in order.")
    pending_tool_calls: list[PendingToolCall] = Field(
        default_factory=list,
        description="With `awaiting_approval`: the calls to decide; with "
        "`awaiting_frontend_tools`: the calls the AG-UI client runs.",
    )


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
