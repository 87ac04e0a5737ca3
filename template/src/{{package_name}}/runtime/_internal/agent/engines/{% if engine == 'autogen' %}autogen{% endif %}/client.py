"""The model client every turn shares, with each call's usage and failure noted for the turn."""

from collections.abc import AsyncGenerator
from typing import Any

from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    ModelFamily,
    ModelInfo,
    SystemMessage,
    UserMessage,
)
from autogen_ext.models.openai import OpenAIChatCompletionClient

from ...instrumentation import Instrumentation, ModelCallRecord
from ...specs import USER
from ...turn import count_model_usage, noting_model_failure
from ...upstream import UpstreamOptions

# Assumed for model names the openai client does not know (vLLM, Ollama, gateways).
_GENERIC_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


class _ServiceModelClient(OpenAIChatCompletionClient):
    """Asks for token usage on streamed calls too (otherwise a streamed turn reports 0), and
    puts every model call under the instrumentation: AutoGen traces agents and tools, not
    these calls."""

    def __init__(self, instrumentation: Instrumentation, **options: Any) -> None:
        super().__init__(**options)
        self._model = options["model"]
        self._observe = instrumentation.model_call

    async def create(self, *args: Any, **kwargs: Any) -> CreateResult:
        with self._observe(self._model) as call, noting_model_failure():
            result = await super().create(*args, **kwargs)
            _record_answer(call, result)
        return result

    async def create_stream(
        self, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        with self._observe(self._model) as call, noting_model_failure():
            stream = super().create_stream(*args, **{**kwargs, "include_usage": True})
            async for item in stream:
                if isinstance(item, CreateResult):
                    _record_answer(call, item)
                yield item


def _record_answer(call: ModelCallRecord, result: CreateResult) -> None:
    count_model_usage(result.usage.prompt_tokens, result.usage.completion_tokens)
    call.answered(
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        finish_reason=result.finish_reason,
        tool_names=[c.name for c in result.content] if isinstance(result.content, list) else [],
    )


def build_model_client(
    upstream: UpstreamOptions, instrumentation: Instrumentation
) -> ChatCompletionClient:
    """The process-wide model client; the openai SDK inside does the retries and timeouts."""
    options: dict[str, Any] = {
        "model": upstream.model,
        "api_key": upstream.api_key,
        "max_retries": upstream.max_retries,
        "timeout": upstream.timeout,
        "http_client": upstream.http_client,
    }
    if upstream.base_url is not None:
        options["base_url"] = upstream.base_url
    if upstream.max_tokens is not None:
        options["max_tokens"] = upstream.max_tokens
    try:
        return _ServiceModelClient(instrumentation, **options)
    except ValueError:  # a model name the client has no capability table for
        return _ServiceModelClient(instrumentation, **options, model_info=_GENERIC_MODEL_INFO)


async def complete(model_client: ChatCompletionClient, instructions: str, text: str) -> str:
    """One model call outside any agent: its text answer."""
    result = await model_client.create(
        [SystemMessage(content=instructions), UserMessage(content=text, source=USER)]
    )
    return result.content if isinstance(result.content, str) else ""
