"""Prometheus metrics: what the service counts, and the `/metrics` exposition.

Every label value comes from a fixed set (route templates, outcomes, token kinds), from
the service's own code (tool names) or from its settings (the ids of its API keys, the
model): never from a request, so series stay few.

With several worker processes each worker counts on its own; set
`PROMETHEUS_MULTIPROC_DIR` to an empty directory before start-up and every worker's
`/metrics` answers the sum over all of them (see docs/observability.md).
"""

import asyncio
import os

from fastapi import APIRouter, Response
from fastapi.routing import iter_route_contexts
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    start_http_server,
)
from starlette.routing import Match
from starlette.types import Scope

# A `*_created` series per counter doubles what is scraped, and Prometheus ignores them.
disable_created_metrics()

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from request to the end of the response, by method and route template.",
    ["method", "route"],
    # Model turns take seconds; health checks and refusals take milliseconds.
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
UPSTREAM_CALLS = Counter(
    "upstream_calls",
    "Model calls as the agent makes them (retries included in one call), by outcome: "
    "ok, rate_limited, timeout, error, cancelled.",
    ["outcome"],
)
UPSTREAM_RETRIES = Counter(
    "upstream_retries", "Attempts the openai SDK repeated after a failed model call attempt."
)
MODEL_TOKENS = Counter(
    "model_tokens",
    "Tokens the model server reported, by API key id and kind: prompt, completion.",
    ["key_id", "kind"],
)
MODEL_COST = Counter(
    "model_cost_usd",
    "What the model calls cost by MODEL_PRICES, in US dollars, by API key id and model.",
    ["key_id", "model"],
)
BUDGET_REFUSALS = Counter(
    "budget_refusals", "Model calls a token budget refused, by API key id.", ["key_id"]
)
TOOL_CALLS = Counter(
    "tool_calls",
    "Tool calls by tool and outcome: ok, invalid_arguments, tool_error, "
    "unserializable_result, tool_failed.",
    ["tool", "outcome"],
)
AGENT_RUNS_IN_FLIGHT = Gauge(
    "agent_runs_in_flight",
    "Agent runs going on, counting runs abandoned at the deadline until they end.",
    multiprocess_mode="livesum",
)
HISTORY_TRIMS = Counter(
    "history_trims", "Model calls whose history was cut to fit the token budget."
)

UNMATCHED_ROUTE = "unmatched"


def route_template(scope: Scope) -> str:
    """The route's path template (`/v1/chat`), never the raw path, which a client chooses."""
    if (routed := scope.get("route")) is not None:  # FastAPI's router noted what it matched
        return str(routed.path)
    # Refused before routing (no API key, too large): match here, so that they are labelled
    # by their route too.
    partial = UNMATCHED_ROUTE
    for route in iter_route_contexts(scope["app"].routes):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(route.path)
        if match == Match.PARTIAL and partial == UNMATCHED_ROUTE:  # the method did not match
            partial = str(route.path)
    return partial


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_REQUEST_DURATION.labels(method, route).observe(seconds)


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return merged


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    # Merging the worker files reads the disk: off the event loop.
    text = await asyncio.to_thread(generate_latest, _registry())
    return Response(text, media_type=CONTENT_TYPE_LATEST)


class MetricsServer:
    """`/metrics` on a port of its own, for scrapers that must not hold an API key."""

    def __init__(self, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, host, registry=_registry())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
