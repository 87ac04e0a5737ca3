"""Observability: OpenTelemetry traces, trace ids in the logs, Prometheus metrics.

See `telemetry` for the spans and `metrics` for what is counted.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import Field

from ...agent.instrumentation import Instrumentation
from ...extensions import extensions
from ...ops.logging import add_enricher
from ...settings import SettingsBase
from .metrics import AGENT_RUNS_IN_FLIGHT, HISTORY_TRIMS, MetricsServer
from .metrics import router as metrics_router
from .telemetry import (
    RequestTelemetry,
    add_trace_ids,
    configure_tracing,
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


def install(app: FastAPI, settings: Settings) -> None:
    configure_tracing()
    add_enricher(add_trace_ids)
    plugged = extensions(app)
    plugged.request_observer = RequestTelemetry()
    plugged.instrumentation = Instrumentation(
        model_call=model_call,
        upstream_attempt=count_retry,
        tool_call=record_tool_call,
        history_trimmed=HISTORY_TRIMS.inc,
        agent_run=AGENT_RUNS_IN_FLIGHT.track_inprogress,
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
