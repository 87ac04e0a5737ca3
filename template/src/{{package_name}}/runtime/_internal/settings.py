"""Settings of the runtime's core, read from `<ENV_PREFIX>*` variables; features add theirs."""

import difflib
import json
import os
import re
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Self, TypeVar, Union, get_args, get_origin

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    AnyHttpUrl,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .project import DEFAULT_MODEL, ENV_PREFIX

_ORIGIN = re.compile(r"https?://[^/\s]+")
# Settings renamed since an earlier template version, old name → new, without the prefix:
# the old variable is still read, with a warning at start-up.
RENAMED = {"LOG_AUTOGEN_EVENTS": "LOG_ENGINE_EVENTS"}


class ConfigurationError(Exception):
    """The environment describes a service that cannot start; the message says what to fix."""


def _list_from_text(value: object, *, secret: bool = False) -> object:
    """A list setting's variable: values separated by commas, or a JSON list."""
    if not isinstance(value, str):
        return value  # a list given in code
    if value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(_how_to_write_a_list(value, secret)) from None
    return [item.strip() for item in value.split(",") if item.strip()]


def _how_to_write_a_list(value: str, secret: bool) -> str:
    """What to write instead of `value`, a broken JSON list such as `[a, b]`: most often a
    shell took away the double quotes of `["a", "b"]`. A secret's values are not repeated."""
    items = [item.strip().strip("\"'") for item in value.strip().strip("[]").split(",")]
    items = [item for item in items if item]
    if secret:
        items = [f"<key {number}>" for number in range(1, len(items) + 1)]
    items = items or ["<value>"]
    return (
        f"starts with [ but is not a JSON list; write {','.join(items)} (values separated by "
        "commas), or a JSON list with each value in double quotes, which a shell keeps only "
        f"inside single quotes: '{json.dumps(items)}'"
    )


Item = TypeVar("Item")
# The type of every list setting. `NoDecode`: pydantic-settings would read the variable as
# JSON only, and answer a plain `a,b` with a traceback that names the field, not the variable.
ListSetting = Annotated[list[Item], NoDecode, BeforeValidator(_list_from_text)]
# A list of secrets: an error about its value shows how to write it, never the values.
SecretListSetting = Annotated[
    list[SecretStr], NoDecode, BeforeValidator(partial(_list_from_text, secret=True))
]


class SettingsBase(BaseSettings):
    """Where every settings class of the service reads from: the core's, each feature's."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        protected_namespaces=(),
        # A field read from more than one variable (a renamed setting) is still set by its
        # name in code.
        populate_by_name=True,
    )


PayloadLogging = Literal["off", "shape", "content"]


class CoreSettings(SettingsBase):
    """The settings every service of this template has."""

    environment: Literal["production", "development"] = Field(
        "production",
        description="`development` is for a developer's machine: a service with API keys "
        "starts without them and takes every caller; a service with the playground serves it. "
        "`production` does neither.",
    )
    model_provider: Literal["offline", "openai"] = Field(
        "offline",
        description="`offline` answers from a deterministic local model (no network, no key); "
        "`openai` talks to any OpenAI-compatible server.",
    )
    model_name: str = Field(DEFAULT_MODEL, min_length=1, description="Model to ask for.")
    model_base_url: AnyHttpUrl | None = Field(
        None,
        description="Base URL of an OpenAI-compatible API (vLLM, Ollama, a gateway); "
        "unset means api.openai.com.",
    )
    model_api_key: SecretStr | None = Field(
        None, description="API key sent to the model server. Never logged."
    )
    model_max_retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed upstream call (the openai SDK's backoff)."
    )
    model_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Time limit of one upstream attempt."
    )
    request_deadline_seconds: float = Field(
        120.0, gt=0, le=3600, description="Time limit of a whole turn: model calls, retries, tools."
    )
    max_concurrent_runs: int = Field(
        64,
        ge=1,
        description="Agent runs one process holds at once, counting runs abandoned at the "
        "deadline until they end; requests beyond it get 503 with Retry-After.",
    )
    agent_max_tool_iterations: int = Field(
        3, ge=1, le=20, description="Rounds of tool calls the agent may make in one turn."
    )
    team_max_messages: int = Field(
        12,
        ge=2,
        le=200,
        description="Messages a team may post in one turn, the user's included; reaching it "
        "ends the turn with `stop_reason: max_messages`.",
    )
    team_token_budget: int = Field(
        60_000,
        ge=1_000,
        description="Tokens (prompt and completion) a team's model calls may use in one turn; "
        "reaching it ends the turn with `stop_reason: token_budget`.",
    )
    team_turn_seconds: float = Field(
        90.0,
        gt=0,
        le=3600,
        description="Time after which a team's turn ends, with `stop_reason: deadline`, as soon "
        "as the agent speaking has finished; keep it under `REQUEST_DEADLINE_SECONDS`, which "
        "ends a turn at once with 504.",
    )
    response_tool_details: bool = Field(
        False,
        description="Put tool arguments and results in the `messages` of chat responses; "
        "off, those messages carry the tool's name only. Results may hold data the user "
        "should not see.",
    )
    tools_enabled: bool = Field(
        True, description="Offer tools to the model; switch off to isolate a bug to tool code."
    )
    tool_result_max_chars: int = Field(
        16_000, ge=256, description="Longest tool result (JSON text) the model receives."
    )
    request_max_messages: int = Field(
        10_000,
        ge=1,
        description="Most messages one chat request may carry. A client without sessions "
        "sends its whole conversation each turn: the body limit and the token budget bound "
        "it, so this is high; older turns are trimmed, not refused.",
    )
    request_max_message_chars: int = Field(
        32_000, ge=1, description="Most characters one message of a chat request may have."
    )
    request_max_body_bytes: int = Field(
        1_000_000,
        ge=1_024,
        description="Largest request body accepted, checked before it is read; larger gets 413.",
    )
    cors_allow_origins: ListSetting[str] = Field(
        [],
        description="Browser origins allowed to call the API, separated by commas, such as "
        "`https://app.example.com,https://admin.example.com`. Empty: no CORS headers, browsers "
        "on other origins are refused. Credentials (cookies) are never allowed.",
    )
    history_max_tokens: int = Field(
        16_000,
        ge=256,
        description="Token budget of one model call: system prompt, tool schemas, history "
        "and the reserved reply together. Older turns are dropped to fit.",
    )
    reply_reserve_tokens: int = Field(
        1_024,
        ge=0,
        description="Tokens kept free in the budget for the model's reply, and asked of the "
        "model as `max_tokens` (see `MODEL_SEND_MAX_TOKENS`).",
    )
    model_send_max_tokens: bool = Field(
        True,
        description="Send `REPLY_RESERVE_TOKENS` as `max_tokens` with every model call, so the "
        "model stops where the budget does. Switch off for servers that refuse the field.",
    )
    reply_max_chars: int = Field(
        200_000,
        ge=1,
        description="Longest reply accepted from the model, streamed or not; a longer one is "
        "a 502 `upstream_bad_answer` and is neither passed on nor stored.",
    )
    token_counter: Literal["estimate", "tiktoken"] = Field(
        "estimate",
        description="`estimate`: UTF-8 bytes / 3, an over-count that needs nothing on disk; "
        "`tiktoken`: exact for OpenAI models, needs the encoding in TIKTOKEN_CACHE_DIR.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level of log lines written."
    )
    log_format: Literal["json", "console"] = Field(
        "json",
        description="`json`: one JSON object per line; `console`: readable, for development.",
    )

    log_engine_events: bool = Field(
        False,
        # Read under its name of template 0.3 too, which `unknown_variables` reports.
        validation_alias=AliasChoices(
            f"{ENV_PREFIX}LOG_ENGINE_EVENTS", f"{ENV_PREFIX}LOG_AUTOGEN_EVENTS"
        ),
        description="Write the engine's event log (whole prompts, replies and tool arguments). "
        "Personal data: for debugging only.",
    )
    log_payload_shape: bool = Field(
        False,
        description="Log the shape of what each model call is sent: roles, types, lengths, "
        "tool-call counts. No content.",
    )
    log_payload_content_unsafe: bool = Field(
        False,
        description="Log the full text of what each model call is sent. Personal data: never "
        "in production.",
    )

    @property
    def payload_logging(self) -> "PayloadLogging":
        """What is logged of each model call's messages: nothing, their shape, or all."""
        if self.log_payload_content_unsafe:
            return "content"
        return "shape" if self.log_payload_shape else "off"

    @property
    def model_label(self) -> str:
        """The model named in replies; `offline` for the built-in model."""
        return "offline" if self.model_provider == "offline" else self.model_name

    @classmethod
    def load(cls, **overrides: object) -> Self:
        """Read settings from the environment, turning validation errors into one message."""
        try:
            return cls(**overrides)
        except ValidationError as error:
            problems = []
            for detail in error.errors(include_url=False, include_input=False):
                field = ".".join(str(part) for part in detail["loc"])
                where = f"{ENV_PREFIX}{field.upper()}: " if field else ""
                problems.append(where + detail["msg"].removeprefix("Value error, "))
            problems += unknown_variables(cls)
            raise ConfigurationError("Invalid configuration: " + "; ".join(problems)) from None

    @model_validator(mode="after")
    def _openai_needs_a_key_or_a_server(self) -> Self:
        if (
            self.model_provider == "openai"
            and self.model_base_url is None
            and not self.model_api_key
        ):
            raise ValueError(
                f"{ENV_PREFIX}MODEL_PROVIDER=openai needs {ENV_PREFIX}MODEL_API_KEY, "
                f"or {ENV_PREFIX}MODEL_BASE_URL for a server that takes no key"
            )
        return self

    @model_validator(mode="after")
    def _model_calls_end_before_the_turn(self) -> Self:
        refuse_unless_below(
            self,
            "model_timeout_seconds",
            "request_deadline_seconds",
            "a model call must be able to end before the turn it belongs to",
        )
        return self

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins_are_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme and host, with a port if any "
                    "and no path, like https://app.example.com"
                )
        return origins


def refuse_unless_below(settings: BaseSettings, lower: str, upper: str, why: str) -> None:
    """Refuse two settings that contradict each other unless `lower`'s value is below `upper`'s,
    in one line naming both."""
    low, high = getattr(settings, lower), getattr(settings, upper)
    if low >= high:
        raise ValueError(
            f"{ENV_PREFIX}{lower.upper()}={low} must be below "
            f"{ENV_PREFIX}{upper.upper()}={high}: {why}"
        )


def unknown_variables(settings_class: type[BaseSettings]) -> list[str]:
    """A sentence for each `<ENV_PREFIX>*` variable, in the environment or the `.env` file,
    that names no setting: a typo that would otherwise be ignored without a word."""
    known = [name.upper() for name in settings_class.model_fields]
    env_file = settings_class.model_config.get("env_file")
    from_file = {}
    if isinstance(env_file, str) and Path(env_file).is_file():
        from_file = dotenv_values(env_file)
    sentences = []
    for name in sorted(_prefixed(os.environ) | _prefixed(from_file)):
        setting = name.upper().removeprefix(ENV_PREFIX)
        if setting in known:
            continue
        if setting in RENAMED:
            renamed = f"{ENV_PREFIX}{RENAMED[setting]}"
            sentences.append(f"{name} is deprecated and read as {renamed}: rename it")
            continue
        # Compared without the prefix, which every name shares.
        nearest = difflib.get_close_matches(setting, known, n=1)
        hint = f"did you mean {ENV_PREFIX}{nearest[0]}?" if nearest else "see docs/configuration.md"
        sentences.append(f"{name} is not a setting and is ignored: {hint}")
    return sentences


def _prefixed(names: Iterable[str]) -> set[str]:
    return {name for name in names if name.upper().startswith(ENV_PREFIX)}


# The lines docs/configuration.md holds the settings table between.
REFERENCE_START = "<!-- settings-reference -->"
REFERENCE_END = "<!-- /settings-reference -->"


def with_settings_reference(markdown: str, table: str) -> str:
    """`markdown` with `table` between its settings-reference lines, in place of what was."""
    before, start, rest = markdown.partition(REFERENCE_START)
    _, end, after = rest.partition(REFERENCE_END)
    if not (start and end):
        raise ValueError(
            f"it lacks the lines {REFERENCE_START} and {REFERENCE_END} the table goes between"
        )
    return f"{before}{REFERENCE_START}\n\n{table}\n\n{REFERENCE_END}{after}"


def settings_reference(settings_class: type[SettingsBase]) -> str:
    """A Markdown table of every setting: variable, type, default and description."""
    rows = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in settings_class.model_fields.items():
        kind = _type_name(field.annotation)
        default = "unset" if field.default is None else f"`{field.default}`"
        rows.append(
            f"| `{ENV_PREFIX}{name.upper()}` | {kind} | {default} | {field.description or ''} |"
        )
    return "\n".join(rows)


def _type_name(annotation: Any) -> str:
    """A type as a reader sets it: a choice by its allowed values, `X | None` as `X or None`."""
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (Union, UnionType):
        return " or ".join(_type_name(member) for member in get_args(annotation))
    if annotation is NoneType:
        return "None"
    name = getattr(annotation, "__name__", None) or str(annotation)
    for module in ("typing.", "pydantic.networks.", "pydantic.types."):
        name = name.replace(module, "")
    return name
