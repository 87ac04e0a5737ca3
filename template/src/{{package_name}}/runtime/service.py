"""What one chat turn does, around the agent: deadline, error mapping, usage accounting."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import openai
import structlog
from autogen_core.models import ChatCompletionClient
from autogen_core.tools import FunctionTool

from .autogen_bridge import new_cancellation_token, prompt_overhead_tokens, run_turn
from .errors import ApiError, upstream_error
from .schemas import ChatRequest, ChatResponse, Usage
from .settings import ENV_PREFIX, ConfigurationError, RuntimeSettings
from .tokens import TokenCounter, message_tokens
from .tools import ServiceTool

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AgentSpec:
    """The team's agent: a name, its instructions and the tools it may call."""

    name: str
    system_prompt: str
    tools: Sequence[ServiceTool] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"agent name {self.name!r} must be a Python identifier")


def history_budget(
    settings: RuntimeSettings,
    agent: AgentSpec,
    tools: Sequence[FunctionTool],
    count_tokens: TokenCounter,
) -> int:
    """Tokens left for the conversation once the prompt, tool schemas and reply are reserved."""
    overhead = prompt_overhead_tokens(agent.system_prompt, tools, count_tokens)
    budget = settings.history_max_tokens - overhead - settings.reply_reserve_tokens
    if budget < 256:
        raise ConfigurationError(
            f"Invalid configuration: {ENV_PREFIX}HISTORY_MAX_TOKENS={settings.history_max_tokens} "
            f"leaves {budget} tokens for the conversation after the system prompt and tool "
            f"schemas ({overhead}) and the reply reserve ({settings.reply_reserve_tokens}); "
            "raise it or lower the reply reserve"
        )
    return budget


class ChatService:
    """Answers chat turns. Holds only what is safe to share: settings, the client, built tools."""

    def __init__(
        self,
        settings: RuntimeSettings,
        agent: AgentSpec,
        model_client: ChatCompletionClient,
        tools: Sequence[FunctionTool],
        count_tokens: TokenCounter,
        history_budget: int,
    ) -> None:
        self._settings = settings
        self._agent = agent
        self._model_client = model_client
        self._tools = tuple(tools)
        self._count_tokens = count_tokens
        self._history_budget = history_budget

    def _check_limits(self, request: ChatRequest) -> None:
        """Limits that depend on settings; the request model checks the rest."""
        limits = self._settings
        if len(request.messages) > limits.request_max_messages:
            raise ApiError(
                422,
                "invalid_request",
                f"messages: {len(request.messages)} messages, more than the limit of "
                f"{limits.request_max_messages}",
            )
        for index, message in enumerate(request.messages):
            if len(message.content) > limits.request_max_message_chars:
                raise ApiError(
                    422,
                    "invalid_request",
                    f"messages.{index}.content: {len(message.content)} characters, more than "
                    f"the limit of {limits.request_max_message_chars}",
                )
        newest = message_tokens(self._count_tokens, request.messages[-1].content)
        if newest > self._history_budget:
            raise ApiError(
                413,
                "input_too_long",
                f"messages.{len(request.messages) - 1}.content: the newest message needs about "
                f"{newest} tokens, more than the {self._history_budget} this service can send",
            )

    async def answer(self, request: ChatRequest, request_id: str) -> ChatResponse:
        self._check_limits(request)
        try:
            async with asyncio.timeout(self._settings.request_deadline_seconds):
                turn = await run_turn(
                    model_client=self._model_client,
                    tools=self._tools,
                    agent_name=self._agent.name,
                    system_prompt=self._agent.system_prompt,
                    messages=request.messages,
                    max_tool_iterations=self._settings.agent_max_tool_iterations,
                    history_budget=self._history_budget,
                    count_tokens=self._count_tokens,
                    cancellation_token=new_cancellation_token(),
                )
        except TimeoutError:
            raise ApiError(504, "deadline_exceeded", "The turn took longer than allowed.") from None
        except openai.OpenAIError as error:
            log.warning("model call failed", upstream_error=type(error).__name__)
            raise upstream_error(error) from error
        structlog.contextvars.bind_contextvars(
            prompt_tokens=turn.prompt_tokens,
            completion_tokens=turn.completion_tokens,
            tool_calls=turn.tool_calls,
        )
        return ChatResponse(
            reply=turn.reply,
            request_id=request_id,
            provider=self._settings.model_provider,
            model=self._settings.model_label,
            usage=Usage(prompt_tokens=turn.prompt_tokens, completion_tokens=turn.completion_tokens),
            tool_calls=turn.tool_calls,
        )
