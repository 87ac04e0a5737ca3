"""`GET /playground`: a page to talk to the service while building it.

One file of plain HTML, CSS and JavaScript (`page.html`), nothing loaded from elsewhere. It
calls the service's own API from the browser, as any client would, so what it shows is what
a client gets: streamed text, tool calls and their outcome, which agent spoke, usage, the
request id, errors by type, and a team's questions and pending approvals to answer. An API
key typed into the page stays in the tab's session storage.

Served in development (`<slug> dev`), or when `PLAYGROUND_ENABLED` asks for it: never by
default in production, where it would show every visitor a way to spend the model's budget.
There `/playground` is a 404 that says how to turn it on, with or without an API key.
"""

import json
from importlib.resources import files
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pydantic import Field

from ...errors import ApiError
from ...extensions import extensions
from ...project import ENV_PREFIX, FEATURES, PROJECT_NAME, PROJECT_SLUG
from ...settings import CoreSettings

log = structlog.get_logger(__name__)

PATH = "/playground"
# Everything the page needs is in it; the browser is told to load nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)


# On the core's settings, since whether the page is served depends on their `environment`.
class Settings(CoreSettings):
    playground_enabled: bool = Field(
        False,
        description="Serve the playground page at `/playground` in production too. It is "
        "always served with `ENVIRONMENT=development`.",
    )


def install(app: FastAPI, settings: Settings) -> None:
    # The page holds nothing private (the calls it makes carry the key typed into it), and
    # its absence is explained to anyone who opens it, key or none.
    extensions(app).public_paths.add(PATH)
    if settings.environment != "development" and not settings.playground_enabled:

        @app.get(PATH, include_in_schema=False)
        async def playground_turned_off() -> None:
            raise ApiError(
                404,
                "not_found",
                f"The playground is served in development only: start the service with "
                f"`{PROJECT_SLUG} dev` ({ENV_PREFIX}ENVIRONMENT=development), or set "
                f"{ENV_PREFIX}PLAYGROUND_ENABLED=true to serve it here too.",
            )

        return
    page = render_page(
        {
            "title": PROJECT_NAME,
            "streaming": "streaming" in FEATURES,
            "sessions": "sessions" in FEATURES,
            "asks_for_a_key": bool(getattr(settings, "api_keys", None)),
            # The page then hints at the offline model's directives.
            "offline_model": settings.model_provider == "offline",
        }
    )

    @app.get(PATH, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    log.info("playground served", path=PATH, environment=settings.environment)


def render_page(config: dict[str, Any]) -> str:
    """The page, told what this service offers (streaming, sessions, API keys, the model)."""
    template = files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    # In a <script> element, "</" could end it early; JSON may spell it "<\/".
    data = json.dumps(config).replace("</", "<\\/")
    return template.replace("/*PLAYGROUND_CONFIG*/{}", data)
