"""How the service reaches its model: the options of an `openai.AsyncOpenAI`-compatible
client, which every engine's model client is built from."""

from dataclasses import dataclass

import httpx
import openai

from ..settings import CoreSettings
from .fake_upstream import create_fake_upstream
from .instrumentation import Instrumentation

_OFFLINE_BASE_URL = "http://offline-model.invalid/v1"


@dataclass(frozen=True)
class UpstreamOptions:
    """The model server, and how to talk to it; the openai SDK does the retries and timeouts."""

    model: str
    base_url: str | None  # None: api.openai.com
    api_key: str
    max_retries: int
    timeout: float
    max_tokens: int | None  # sent with every call only when MODEL_SEND_MAX_TOKENS is set
    http_client: httpx.AsyncClient


def upstream_options(settings: CoreSettings, instrumentation: Instrumentation) -> UpstreamOptions:
    """The options of the process-wide model client: make them in the app's lifespan, since
    the HTTP client is bound to the event loop it is first used on."""
    if settings.model_provider == "offline":
        transport = httpx.ASGITransport(app=create_fake_upstream(), raise_app_exceptions=False)
        http_client = httpx.AsyncClient(transport=transport)
        base_url: str | None = _OFFLINE_BASE_URL
        api_key = "offline"
    else:
        http_client = openai.DefaultAsyncHttpxClient()
        base_url = None if settings.model_base_url is None else str(settings.model_base_url)
        key = settings.model_api_key
        # Local servers such as Ollama take no key, but the SDK insists on one.
        api_key = key.get_secret_value() if key else "unused"
    if instrumentation.upstream_attempt is not None:
        # The SDK retries below the engine, where no result shows it: each attempt is seen here.
        http_client.event_hooks = {"request": [instrumentation.upstream_attempt]}
    return UpstreamOptions(
        model=settings.model_label,
        base_url=base_url,
        api_key=api_key,
        max_retries=settings.model_max_retries,
        timeout=settings.model_timeout_seconds,
        max_tokens=settings.reply_reserve_tokens if settings.model_send_max_tokens else None,
        http_client=http_client,
    )
