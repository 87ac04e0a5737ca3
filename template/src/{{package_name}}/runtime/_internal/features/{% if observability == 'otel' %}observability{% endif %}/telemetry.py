"""OpenTelemetry traces: one trace per request, exported over OTLP only when configured.

The spans of a chat request:

    POST /v1/chat                     HTTP server span (ours: `RequestTelemetry`)
      create_agent <agent>            AutoGen
      invoke_agent <agent>            AutoGen
        chat <model>                  one per model call, retries included (ours)
        execute_tool <tool>           AutoGen

Attributes name the request, model, token counts, tools and error types; message
content is never recorded. `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`)
turns export on; without it spans are still made, so log lines carry trace ids that
join them to a caller's trace, but nothing is sent anywhere.
"""

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol

import openai
import structlog
from opentelemetry import context, propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.datastructures import Headers
from starlette.types import Scope

from ...context import current_caller, current_request_id
from ...project import PROJECT_SLUG
from .metrics import (
    BUDGET_REFUSALS,
    MODEL_COST,
    MODEL_TOKENS,
    TOOL_CALLS,
    UNMATCHED_ROUTE,
    UPSTREAM_CALLS,
    UPSTREAM_RETRIES,
    observe_request,
    route_template,
)

OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Probes and scrapes every few seconds would bury the traces worth reading.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
REQUEST_ID_ATTRIBUTE = "request_id"

_tracer = trace.get_tracer(__name__)


class _RequestIdProcessor(SpanProcessor):
    """Puts the request id on every span started while a request is being answered."""

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        if request_id := current_request_id():
            span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)


class _TracerCachingProvider(TracerProvider):
    """Hands out one tracer per name. AutoGen asks for its tracer at every span it starts,
    and the SDK builds a new one each time: some 20 µs, three to five times a turn."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource=resource)
        self._tracers: dict[tuple[str, str | None, str | None], trace.Tracer] = {}

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Mapping[str, object] | None = None,
    ) -> trace.Tracer:
        if attributes is not None:  # not hashable, and rare
            return super().get_tracer(
                instrumenting_module_name, instrumenting_library_version, schema_url, attributes
            )
        key = (instrumenting_module_name, instrumenting_library_version, schema_url)
        if (tracer := self._tracers.get(key)) is None:
            tracer = self._tracers[key] = super().get_tracer(*key)
        return tracer


def build_tracer_provider(environ: Mapping[str, str] = os.environ) -> TracerProvider:
    """A tracer provider that exports over OTLP when the standard variables name an endpoint."""
    resource = Resource.create()
    if str(resource.attributes[SERVICE_NAME]).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: PROJECT_SLUG}))
    provider = _TracerCachingProvider(resource)
    provider.add_span_processor(_RequestIdProcessor())
    if any(environ.get(name) for name in OTLP_ENDPOINT_VARIABLES):
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def configure_tracing() -> None:
    """Install the process's tracer provider once; AutoGen's spans go to it too.

    A provider installed before (by `opentelemetry-instrument`, say) is left alone.
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(build_tracer_provider())


class RequestTelemetry:
    """A server span per HTTP request, continuing the caller's trace, and the HTTP metrics.

    Called by the runtime's own request middleware (`http.middleware.RequestObserver`),
    outermost of all, so refused requests are counted too: one layer where a generic
    ASGI instrumentation would add two, each wrapping every `receive` and `send`.
    """

    def start(self, scope: Scope) -> "ObservedRequest":
        return ObservedRequest(scope)


class ObservedRequest:
    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._started = time.perf_counter()
        self._span: trace.Span | None = None
        if scope["path"] in UNTRACED_PATHS:
            return
        caller_context = propagate.extract(Headers(scope=scope))
        self._span = _tracer.start_span(
            scope["method"],
            context=caller_context,
            kind=SpanKind.SERVER,
            attributes={"http.method": scope["method"], "http.target": scope["path"]},
        )
        self._attached = context.attach(trace.set_span_in_context(self._span, caller_context))

    def response_started(self, status: int) -> None:
        if self._span is None:
            return
        # Now: the error handlers have bound the error type, and a streamed response's
        # body may run long after this.
        self._span.set_attribute("http.status_code", status)
        if error_type := _bound_error_type():
            self._span.set_attribute("error.type", error_type)
        if status >= 500:
            self._span.set_status(Status(StatusCode.ERROR))

    def finished(self, status: int, error: BaseException | None) -> None:
        route = route_template(self._scope)
        method = self._scope["method"]
        observe_request(method, route, status, time.perf_counter() - self._started)
        if self._span is None:
            return
        context.detach(self._attached)
        if route != UNMATCHED_ROUTE:
            self._span.update_name(f"{method} {route}")
            self._span.set_attribute("http.route", route)
        if error is not None:
            self._span.set_attribute("error.type", type(error).__name__)
            self._span.set_status(Status(StatusCode.ERROR))
        self._span.end()


def add_trace_ids(
    _: object, __: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """The ids of the span current when the line was logged, so logs and traces join."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event["trace_id"] = format(span.trace_id, "032x")
        event["span_id"] = format(span.span_id, "016x")
    return event


def _bound_error_type() -> str | None:
    """The error body's type, which the error handlers bind for the access line."""
    return structlog.contextvars.get_contextvars().get("error_type")


# A model's price per million tokens, in US dollars, by kind of token: prompt, completion.
ModelPrice = Mapping[str, float]


class ModelCall:
    """What one model call answered, recorded on its span and in the token counters."""

    def __init__(self, span: trace.Span, model: str, price: ModelPrice | None) -> None:
        self._span = span
        self._model = model
        self._price = price

    def answered(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: str,
        tool_names: Sequence[str],
    ) -> None:
        self._span.set_attributes(
            {
                "gen_ai.usage.input_tokens": prompt_tokens,
                "gen_ai.usage.output_tokens": completion_tokens,
                "gen_ai.response.finish_reasons": [finish_reason],
                "tool_names": list(tool_names),
            }
        )
        key_id = current_caller()
        MODEL_TOKENS.labels(key_id, "prompt").inc(prompt_tokens)
        MODEL_TOKENS.labels(key_id, "completion").inc(completion_tokens)
        if self._price is not None:
            cost = (
                prompt_tokens * self._price["prompt"]
                + completion_tokens * self._price["completion"]
            ) / 1_000_000
            MODEL_COST.labels(key_id, self._model).inc(cost)


def count_budget_refusal() -> None:
    BUDGET_REFUSALS.labels(current_caller()).inc()


@contextmanager
def model_call(model: str, prices: Mapping[str, ModelPrice] | None = None) -> Iterator[ModelCall]:
    """A span around one model call (AutoGen makes none) and its outcome counted.

    The span is not made current: a streamed call's span lives across the yields of a
    generator, and nothing runs beneath it that would need it as a parent.
    """
    span = _tracer.start_span(
        f"chat {model}",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": model,
        },
    )
    try:
        yield ModelCall(span, model, (prices or {}).get(model))
    except BaseException as error:
        outcome = _outcome(error)
        UPSTREAM_CALLS.labels(outcome).inc()
        span.set_attribute("error.type", type(error).__name__)
        if outcome != "cancelled":
            # The type only: an upstream error message can quote what it was sent.
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    else:
        UPSTREAM_CALLS.labels("ok").inc()
    finally:
        span.end()


def _outcome(error: BaseException) -> str:
    if isinstance(error, openai.RateLimitError):
        return "rate_limited"
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, Exception):
        return "error"
    return "cancelled"


class _Request(Protocol):
    headers: Mapping[str, str]


async def count_retry(request: _Request) -> None:
    """An HTTP client event hook: the openai SDK numbers each attempt of a call in a header."""
    if request.headers.get("x-stainless-retry-count", "0") != "0":
        UPSTREAM_RETRIES.inc()


def record_tool_call(tool: str, outcome: str) -> None:
    """The outcome of a tool call, on AutoGen's `execute_tool` span and in the counter."""
    TOOL_CALLS.labels(tool, outcome).inc()
    if outcome != "ok":
        span = trace.get_current_span()
        span.set_attribute("error.type", outcome)
        span.set_status(Status(StatusCode.ERROR, outcome))
