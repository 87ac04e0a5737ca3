"""The API's docs in a browser: Swagger UI at `/docs`, with nothing loaded from elsewhere.

FastAPI's own pages load their scripts and styles from a CDN, so they are blank wherever the
browser cannot reach one. `fastapi-offline` serves the same page with copies of those files,
which its releases keep current. There is no ReDoc page (`/redoc`): ReDoc always loads its
logo from its vendor's CDN, and Swagger UI shows the same document and can also call the API.
"""

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

SWAGGER_UI_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"
# The page's script, style sheet and icon.
ASSETS_PATH = "/docs/assets"


def app_with_offline_docs(title: str) -> FastAPI:
    return FastAPIOffline(
        title=title,
        docs_url=SWAGGER_UI_PATH,
        redoc_url=None,
        openapi_url=OPENAPI_PATH,
        static_url=ASSETS_PATH,
        # FastAPI's own telemetry would open a second server span, in a trace of its own,
        # outside the one the request middleware opens (features/observability).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )


def is_docs_page_path(path: str) -> bool:
    """Whether a browser fetches `path` to show the docs: the page, one of its assets, or the
    OpenAPI document the page renders."""
    return path in (SWAGGER_UI_PATH, OPENAPI_PATH) or path.startswith(f"{ASSETS_PATH}/")
