"""Observability: OpenTelemetry traces, trace ids in the logs, Prometheus metrics.

See `telemetry` for the spans and `metrics` for what is counted.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Self

from fastapi import FastAPI
from pydantic import Field, model_validator

from ...agent.instrumentation import Instrumentation
from ...extensions import extensions
from ...ops.logging import add_enricher
from ...project import ENV_PREFIX
from ...settings import SettingsBase
from .metrics import AGENT_RUNS_IN_FLIGHT, HISTORY_TRIMS, MetricsServer
from .metrics import router as metrics_router
from .telemetry import (
    RequestTelemetry,
    add_trace_ids,
    configure_tracing,
    count_budget_refusal,
    count_retry,
    model_call,
    record_tool_call,
)


class Settings(SettingsBase):
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65_535,
        description="Serve Prometheus metrics on this port, with no API key, instead of on "
        "`/metrics` of the main port behind the API's access control.",
    )
    metrics_host: str = Field(
        "0.0.0.0", description="Address the separate metrics port listens on."
    )
    model_prices: dict[str, dict[str, float]] = Field(
        {},
        description="Prices per million tokens in US dollars, by model name, as a JSON object: "
        '`{"gpt-4.1-mini": {"prompt": 0.4, "completion": 1.6}}`. A model listed here adds '
        "what its calls cost to `model_cost_usd_total`.",
    )

    @model_validator(mode="after")
    def _prices_name_both_kinds(self) -> Self:
        for model, price in self.model_prices.items():
            if set(price) != {"prompt", "completion"} or min(price.values()) < 0:
                raise ValueError(
                    f"{ENV_PREFIX}MODEL_PRICES gives {model} {price}: give each model a "
                    '`{"prompt": <USD>, "completion": <USD>}` per million tokens, neither '
                    "negative"
                )
        return self


def install(app: FastAPI, settings: Settings) -> None:
    configure_tracing()
    add_enricher(add_trace_ids)
    plugged = extensions(app)
    plugged.request_observer = RequestTelemetry()
    plugged.instrumentation = Instrumentation(
        model_call=partial(model_call, prices=settings.model_prices),
        upstream_attempt=count_retry,
        tool_call=record_tool_call,
        history_trimmed=HISTORY_TRIMS.inc,
        agent_run=AGENT_RUNS_IN_FLIGHT.track_inprogress,
        budget_refused=count_budget_refusal,
    )
    port = settings.metrics_port
    if port is None:
        app.include_router(metrics_router)
        return

    @asynccontextmanager
    async def metrics_server_running(_: FastAPI) -> AsyncIterator[None]:
        server = MetricsServer(settings.metrics_host, port)
        try:
            yield
        finally:
            server.close()

    plugged.lifespans.append(metrics_server_running)
