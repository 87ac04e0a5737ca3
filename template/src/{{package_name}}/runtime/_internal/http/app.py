"""The application factory: the core's routes and middleware, then each installed feature."""

import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import import_module

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ..agent.conversation import ClientHeldConversations
from ..agent.engine import load_engine
from ..agent.service import ChatService, history_budget
from ..agent.specs import AgentOrTeam
from ..agent.tokens import build_token_counter
from ..errors import install_error_handlers
from ..extensions import extensions
from ..features import INSTALLED, RuntimeSettings
from ..ops.logging import configure_logging
from ..project import ENV_PREFIX, PROJECT_NAME
from ..settings import ConfigurationError, refuse_unless_below, unknown_variables
from .docs import app_with_offline_docs
from .middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from .routes import router

log = structlog.get_logger(__name__)


def load_app(path: str) -> FastAPI:
    """The app at `path`, `MODULE:NAME`: an app, or a function making one."""
    module, _, name = path.partition(":")
    found = getattr(import_module(module), name)
    return found if isinstance(found, FastAPI) else found()


def create_app(settings: RuntimeSettings, served: AgentOrTeam) -> FastAPI:
    """The service answering with `served`, a lone agent or a team."""
    configure_logging(settings)
    for typo in unknown_variables(type(settings)):
        log.warning(typo)
    app = app_with_offline_docs(PROJECT_NAME)
    install_error_handlers(app)
    app.include_router(router)
    # Middleware: the last added runs first. The body limit is innermost; features add
    # theirs around it (the API key check); CORS goes around those, since a preflight
    # carries no key; the request context is outermost, so every line has a request id.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.request_max_body_bytes)
    for feature in INSTALLED:
        feature.install(app, settings)
    plugged = extensions(app)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, observer=plugged.request_observer)

    instrumentation = plugged.instrumentation
    count_tokens = build_token_counter(settings)
    engine = load_engine(
        served,
        settings=settings,
        instrumentation=instrumentation,
        count_tokens=count_tokens,
        budget_for=lambda agent_name, overhead: history_budget(settings, agent_name, overhead),
        call_guard=plugged.call_guard,
    )
    if engine.kind != "single":  # only a team's turn ends at TEAM_TURN_SECONDS
        try:
            refuse_unless_below(
                settings,
                "team_turn_seconds",
                "request_deadline_seconds",
                "a team's turn must end on its own before the deadline cuts it off with 504",
            )
        except ValueError as error:
            raise ConfigurationError(f"Invalid configuration: {error}") from None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Started here, not at import: a client bound to another event loop fails later.
        await engine.start()
        app.state.chat = ChatService(settings, engine, count_tokens)
        app.state.conversations = ClientHeldConversations()
        try:
            async with AsyncExitStack() as features_running:
                for feature_lifespan in plugged.lifespans:
                    await features_running.enter_async_context(feature_lifespan(app))
                # What this process really runs with, for checking a deployment. Secret
                # settings show as `**********`; a password inside a URL setting (REDIS_URL,
                # MODEL_BASE_URL) is blanked by the log redaction, as in every other line.
                log.debug("settings", settings=settings.model_dump(mode="json"))
                log.info(
                    "service started",
                    provider=settings.model_provider,
                    model=settings.model_label,
                    engine=engine.name,
                    agents=list(engine.names),
                    team=engine.kind,
                    tools=list(engine.tool_descriptions),
                    history_budget_tokens=engine.history_budget,
                    features=[feature.__name__.rpartition(".")[2] for feature in INSTALLED],
                )
                if engine.approval_tool_names and isinstance(
                    app.state.conversations, ClientHeldConversations
                ):
                    log.warning(
                        "tools that need approval will never run: deciding on their calls "
                        "needs sessions, which this service does not keep",
                        tools=engine.approval_tool_names,
                    )
                if settings.model_provider == "offline":
                    log.warning(
                        "offline model in use: replies are canned and no model server is "
                        f"called; set {ENV_PREFIX}MODEL_PROVIDER=openai for a real model"
                    )
                # What start-up built (the engine's, pydantic and OpenTelemetry objects: most of
                # the heap) lives as long as the process. Frozen, it is left out of full
                # garbage collections, which otherwise pause every turn in flight for some
                # 60 ms each time.
                gc.collect()
                gc.freeze()
                yield
        finally:
            del app.state.chat, app.state.conversations
            await engine.aclose()
            log.info("service stopped")

    app.router.lifespan_context = lifespan
    return app
