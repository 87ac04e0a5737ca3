"""structlog set up once per process: every line, ours or a library's, is one event.

The service's own loggers and the standard-library loggers (uvicorn, httpx,
AutoGen) share one handler, so production gets one JSON object per line.
"""

import logging
import sys

import structlog
from pydantic import AnyUrl, SecretStr

from ..agent.engine import engine_features
from ..settings import CoreSettings

_HANDLER_NAME = "service"
# Processors that features add to every line (the observability feature's trace ids).
_enrichers: list[structlog.types.Processor] = []


def _redact(secrets: list[str]) -> structlog.types.Processor:
    """Blank out secret values in a rendered line, whoever logged them and however."""

    def redact(_: object, __: str, line: str) -> str:
        for secret in secrets:
            line = line.replace(secret, "**********")
        return line

    return redact


def add_enricher(processor: structlog.types.Processor) -> None:
    """Run `processor` on every log line from now on, ours and the libraries'."""
    if processor not in _enrichers:
        _enrichers.append(processor)


def _enrich(
    logger: object, method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    for processor in _enrichers:
        event = processor(logger, method, event)
    return event


def configure_logging(settings: CoreSettings) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _enrich,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if settings.log_format == "json":
        renderer: structlog.types.Processor = structlog.processors.JSONRenderer()
        # Frames without their local variables: locals hold prompts, messages and keys.
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
                _redact(_secret_values(settings)),
            ],
        )
    )
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler: others (pytest's log capture, say) stay attached.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(settings.log_level)
    logging.captureWarnings(True)  # library warnings become log lines, redaction included
    # The engine's chatty loggers, and those that write whole prompts and replies
    # (personal data) unless the engine's events are asked for.
    engine = engine_features()
    for name in engine.quiet_loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in engine.content_loggers:
        logging.getLogger(name).setLevel(
            logging.INFO if settings.log_engine_events else logging.WARNING
        )
    # uvicorn's access line would duplicate ours; the HTTP clients (httpx, and httpx2 inside
    # the openai SDK) log every upstream call, URL included, at INFO.
    for name in ("uvicorn.access", "httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def _secret_values(settings: CoreSettings) -> list[str]:
    """Every secret setting's value (a list of keys included) and every password written in a
    setting's URL, each long enough that blanking it cannot hide other text."""
    values = []
    for name in type(settings).model_fields:
        setting = getattr(settings, name)
        for value in setting if isinstance(setting, list) else [setting]:
            if isinstance(value, SecretStr):
                values.append(value.get_secret_value())
            elif isinstance(value, AnyUrl) and value.password:
                values.append(value.password)
    return [value for value in values if len(value) >= 8]
