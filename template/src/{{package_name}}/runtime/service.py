"""What one chat turn does, around the agent: deadline, error mapping, usage accounting."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import openai
import structlog
from autogen_core.models import ChatCompletionClient
from autogen_core.tools import FunctionTool

from .autogen_bridge import new_cancellation_token, run_turn
from .errors import ApiError, upstream_error
from .schemas import ChatRequest, ChatResponse, Usage
from .settings import RuntimeSettings
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


class ChatService:
    """Answers chat turns. Holds only what is safe to share: settings, the client, built tools."""

    def __init__(
        self,
        settings: RuntimeSettings,
        agent: AgentSpec,
        model_client: ChatCompletionClient,
        tools: Sequence[FunctionTool],
    ) -> None:
        self._settings = settings
        self._agent = agent
        self._model_client = model_client
        self._tools = tuple(tools)

    async def answer(self, request: ChatRequest, request_id: str) -> ChatResponse:
        try:
            async with asyncio.timeout(self._settings.request_deadline_seconds):
                turn = await run_turn(
                    model_client=self._model_client,
                    tools=self._tools,
                    agent_name=self._agent.name,
                    system_prompt=self._agent.system_prompt,
                    messages=request.messages,
                    max_tool_iterations=self._settings.agent_max_tool_iterations,
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
