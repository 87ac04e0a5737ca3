"""JSON-safe tools: whatever a tool returns or raises, the model receives JSON text.

Declare a tool with `@tool` on a plain function (sync or async). Its type hints
are the argument schema the model sees and the validation its arguments get.
"""

import asyncio
import base64
import dataclasses
import datetime as dt
import enum
import inspect
import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, overload

import pydantic
import structlog

log = structlog.get_logger(__name__)


class ToolError(Exception):
    """An expected failure the model should hear about, logged without a stack trace.

    Raise it for domain errors such as "no customer with that id": the model gets
    `{"error": {"type": type, "message": message, "retryable": retryable}}`.
    """

    def __init__(self, message: str, *, type: str = "tool_error", retryable: bool = False) -> None:
        super().__init__(message)
        self.type = type
        self.retryable = retryable


class UnserializableResultError(TypeError):
    """A tool returned a value that has no JSON form."""


ToolOutcome = Literal[
    "ok", "invalid_arguments", "tool_error", "unserializable_result", "tool_failed"
]


@dataclasses.dataclass(frozen=True)
class ToolResult:
    """The JSON text a tool call gives the model, and how the call went."""

    text: str
    outcome: ToolOutcome


@dataclasses.dataclass(frozen=True)
class ServiceTool:
    """A tool the agent can call; build it with `@tool`, once, at import time."""

    name: str
    description: str
    function: Callable[..., Any]
    _validated: Callable[..., Any] = dataclasses.field(repr=False)
    # A person must approve each call before it runs: the turn pauses with the call pending.
    requires_approval: bool = False
    # The approver may run the call with other arguments than the model's.
    editable_arguments: bool = False

    async def invoke(self, arguments: Mapping[str, Any], *, max_chars: int) -> str:
        """Run the tool and return JSON text: its result, or a structured error. Never raises."""
        return (await self.call(arguments, max_chars=max_chars)).text

    async def call(self, arguments: Mapping[str, Any], *, max_chars: int) -> ToolResult:
        """`invoke`, telling also how the call went."""
        try:
            result = self._validated(**arguments)
            if inspect.isawaitable(result):
                result = await result
            return ToolResult(limit_size(to_json_text(result), max_chars), "ok")
        except pydantic.ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                for e in error.errors(include_url=False)
            )
            return self.reject_arguments(problems, max_chars=max_chars)
        except ToolError as error:
            log.info("tool reported an error", tool=self.name, error_type=error.type)
            text = tool_error_json(
                error.type, str(error), retryable=error.retryable, max_chars=max_chars
            )
            return ToolResult(text, "tool_error")
        except UnserializableResultError as error:
            log.error("tool result is not JSON-safe", tool=self.name, problem=str(error))
            text = tool_error_json(
                "unserializable_result", str(error), retryable=False, max_chars=max_chars
            )
            return ToolResult(text, "unserializable_result")
        except Exception as error:
            log.exception("tool raised", tool=self.name)
            message = f"The tool failed with {type(error).__name__}."
            text = tool_error_json("tool_failed", message, retryable=False, max_chars=max_chars)
            return ToolResult(text, "tool_failed")

    def reject_arguments(self, problems: str, *, max_chars: int) -> ToolResult:
        """What the model receives for arguments the tool cannot take; `problems` names
        each argument at fault and why."""
        # Cut for the log too: the model chooses the arguments, and their names, at any size.
        log.warning("tool arguments rejected", tool=self.name, problems=problems[:max_chars])
        text = tool_error_json("invalid_arguments", problems, retryable=True, max_chars=max_chars)
        return ToolResult(text, "invalid_arguments")


@overload
def tool(function: Callable[..., Any], /) -> ServiceTool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    editable_arguments: bool = False,
) -> Callable[[Callable[..., Any]], ServiceTool]: ...
def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    editable_arguments: bool = False,
) -> ServiceTool | Callable[[Callable[..., Any]], ServiceTool]:
    """Make a function a tool. The docstring is the description the model reads.

    With `requires_approval`, a call pauses the turn (`status: awaiting_approval`) until the
    next request on the session approves or rejects it; see docs/teams.md. The approver may
    change the call's arguments only with `editable_arguments`: they can then be anything the
    type hints allow, so bound them (docs/writing-tools.md, "Bounds on arguments").
    """

    def build(function: Callable[..., Any]) -> ServiceTool:
        text = description or inspect.getdoc(function)
        if not text:
            raise ValueError(f"tool {function.__name__!r} needs a docstring or a description")
        if editable_arguments and not requires_approval:
            raise ValueError(
                f"tool {function.__name__!r}: editable_arguments lets an approver edit a call; "
                "it needs requires_approval=True"
            )
        return ServiceTool(
            name=name or function.__name__,
            description=text,
            function=function,
            _validated=_validating(function),
            requires_approval=requires_approval,
            editable_arguments=editable_arguments,
        )

    return build if function is None else build(function)


def _validating(function: Callable[..., Any]) -> Callable[..., Any]:
    """Validate arguments against the type hints; run sync functions off the event loop."""
    checked = pydantic.validate_call(function)
    if inspect.iscoroutinefunction(function):
        return checked

    def in_thread(**arguments: Any) -> Awaitable[Any]:
        return asyncio.to_thread(checked, **arguments)

    return in_thread


_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def tool_name_problem(name: str) -> str | None:
    """Why the model cannot be offered a tool of this name; None if it can. OpenAI and
    AutoGen take 1 to 64 ASCII letters, digits, '_' and '-', and AutoGen refuses every model
    call that offers any other name."""
    if _TOOL_NAME.fullmatch(name):
        return None
    if len(name) > 64:
        return f"{len(name)} characters, over 64"
    return "not only ASCII letters, digits, '_' and '-'"


def tool_error_json(type: str, message: str, *, retryable: bool, max_chars: int) -> str:
    """The structured error the model receives, within `max_chars`: a message too long for
    it is cut, saying so, so that the error stays an error."""

    def with_message(kept: int) -> str:
        shown = message[:kept]
        if kept < len(message):
            shown += f" [cut from {len(message)} characters]"
        return _dump({"error": {"type": type, "message": shown, "retryable": retryable}})

    error = _cut_to_fit(with_message, min(len(message), max_chars), max_chars)
    # Only a `type` longer than the limit leaves no room: cut as any oversized result is.
    return limit_size(error, max_chars)


def is_tool_error(text: str) -> bool:
    """Whether a tool's JSON text is the structured error `tool_error_json` writes."""
    if not text.startswith('{"error":'):
        return False
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return False  # a truncated result, say
    return isinstance(error, dict) and set(error) == {"type", "message", "retryable"}


def limit_size(text: str, max_chars: int) -> str:
    """Cut an oversized result, keeping the answer valid JSON and saying that it was cut."""
    if len(text) <= max_chars:
        return text
    envelope = {"truncated": True, "original_chars": len(text)}

    def with_part(kept: int) -> str:
        return _dump({**envelope, "partial_result": text[:kept]})

    return _cut_to_fit(with_part, max_chars, max_chars)


def _cut_to_fit(render: Callable[[int], str], keep: int, max_chars: int) -> str:
    """`render(keep)`, with `keep`, the characters kept of the text being cut, lowered until
    the rendering fits in `max_chars` or `keep` is 0.

    Escaping can make the kept characters longer in JSON: one step may not be enough.
    """
    while True:
        rendered = render(keep)
        if len(rendered) <= max_chars or keep == 0:
            return rendered
        keep = max(keep - (len(rendered) - max_chars), 0)


def to_json_text(value: Any) -> str:
    """Canonical JSON text for a tool result (sorted keys, no spaces, UTF-8 kept)."""
    return _dump(to_json_safe(value))


def _dump(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def to_json_safe(value: Any, path: str = "$", _seen: frozenset[int] = frozenset()) -> Any:
    """Convert a value to plain JSON types, deterministically; raise if it has no JSON form."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnserializableResultError(f"{path} is {value}, which JSON cannot represent")
        return value
    if isinstance(value, enum.Enum):
        return to_json_safe(value.value, path, _seen)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise UnserializableResultError(
                f"{path} is Decimal {value}, which JSON cannot represent"
            )
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if id(value) in _seen:
        raise UnserializableResultError(f"{path} refers back to itself")
    seen = _seen | {id(value)}
    if isinstance(value, pydantic.BaseModel):
        return to_json_safe(value.model_dump(), path, seen)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return to_json_safe(fields, path, seen)
    if isinstance(value, Mapping):
        return {
            _key(key, path): to_json_safe(item, f"{path}.{key}", seen)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [to_json_safe(item, f"{path}[{i}]", seen) for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [to_json_safe(item, f"{path}[]", seen) for item in value]
        return sorted(items, key=_dump)
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    raise UnserializableResultError(f"{path} is of type {kind}, which has no JSON form")


def _key(key: Any, path: str) -> str:
    safe = to_json_safe(key, f"{path}.<key>")
    if isinstance(safe, dict | list):
        raise UnserializableResultError(f"{path} has a key of type {type(key).__qualname__}")
    return safe if isinstance(safe, str) else _dump(safe)
