"""Every AutoGen call of the service lives here, so moving framework touches one module.

AutoGen objects are split by lifetime: the model client and the tools are built
once per process; an agent and its model context are built for one request and
dropped with it, because an `AssistantAgent` keeps the conversation it ran.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage, ToolCallRequestEvent
from autogen_core import CancellationToken
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    UserMessage,
)
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient

from .fake_upstream import create_fake_upstream
from .schemas import ChatMessage
from .settings import RuntimeSettings
from .tools import ServiceTool

# Assumed for model names the openai client does not know (vLLM, Ollama, gateways).
_GENERIC_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)
_OFFLINE_BASE_URL = "http://offline-model.invalid/v1"


@dataclass(frozen=True)
class TurnResult:
    reply: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: int


def build_model_client(settings: RuntimeSettings) -> ChatCompletionClient:
    """The process-wide model client; the openai SDK inside does the retries and timeouts."""
    options: dict[str, Any] = {
        "model": settings.model_label,
        "max_retries": settings.model_max_retries,
        "timeout": settings.model_timeout_seconds,
    }
    if settings.model_provider == "offline":
        transport = httpx.ASGITransport(app=create_fake_upstream())
        options["http_client"] = httpx.AsyncClient(transport=transport)
        options["base_url"] = _OFFLINE_BASE_URL
        options["api_key"] = "offline"
    else:
        if settings.model_base_url is not None:
            options["base_url"] = str(settings.model_base_url)
        key = settings.model_api_key
        # Local servers such as Ollama take no key, but the SDK insists on one.
        options["api_key"] = key.get_secret_value() if key else "unused"
    try:
        return OpenAIChatCompletionClient(**options)
    except ValueError:  # a model name the client has no capability table for
        return OpenAIChatCompletionClient(**options, model_info=_GENERIC_MODEL_INFO)


class _JsonSafeFunctionTool(FunctionTool):
    """A FunctionTool whose arguments, result and errors are handled by `ServiceTool.invoke`."""

    def __init__(self, service_tool: ServiceTool, max_chars: int) -> None:
        super().__init__(service_tool.function, service_tool.description, service_tool.name)
        self._service_tool = service_tool
        self._max_chars = max_chars

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> str:
        return await self._service_tool.invoke(args, max_chars=self._max_chars)

    def return_value_as_string(self, value: Any) -> str:
        return str(value)


def build_tools(service_tools: Sequence[ServiceTool], max_chars: int) -> list[FunctionTool]:
    """Wrap tools once at start-up: wrapping costs about a millisecond per tool."""
    names = [t.name for t in service_tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
    return [_JsonSafeFunctionTool(t, max_chars) for t in service_tools]


def _history_message(message: ChatMessage, agent_name: str) -> LLMMessage:
    if message.role == "assistant":
        return AssistantMessage(content=message.content, source=agent_name)
    return UserMessage(content=message.content, source="user")


async def run_turn(
    *,
    model_client: ChatCompletionClient,
    tools: Sequence[FunctionTool],
    agent_name: str,
    system_prompt: str,
    messages: Sequence[ChatMessage],
    max_tool_iterations: int,
    cancellation_token: CancellationToken,
) -> TurnResult:
    """Answer the newest user message, with the earlier messages as history, on a fresh agent."""
    *history, newest = messages
    agent = AssistantAgent(
        name=agent_name,
        model_client=model_client,
        tools=list(tools),
        system_message=system_prompt,
        model_context=UnboundedChatCompletionContext(
            initial_messages=[_history_message(m, agent_name) for m in history]
        ),
        reflect_on_tool_use=True,
        max_tool_iterations=max_tool_iterations,
    )
    result = await agent.run(
        task=TextMessage(content=newest.content, source="user"),
        cancellation_token=cancellation_token,
    )
    usages = [m.models_usage for m in result.messages if m.models_usage is not None]
    return TurnResult(
        reply=result.messages[-1].to_text(),
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        tool_calls=sum(
            len(m.content) for m in result.messages if isinstance(m, ToolCallRequestEvent)
        ),
    )


def new_cancellation_token() -> CancellationToken:
    """One per request: a reused token keeps every callback ever linked to it."""
    return CancellationToken()
