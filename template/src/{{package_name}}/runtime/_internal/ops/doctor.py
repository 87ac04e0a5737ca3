"""`<project_slug> doctor`: what is wrong with this environment, one line per check.

For the moment a service misbehaves somewhere new: the settings load, the model server
answers a one-token call (or exactly why not: DNS, TLS, refused, timeout, 401, 404), Redis
answers when sessions are on, each MCP server starts and lists its tools when MCP tools are
on, the token counter has its data. It prints no secret: the
settings' secrets never, URLs without their user and password.
"""

import asyncio
import importlib
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai

from ..agent.tokens import build_token_counter
from ..project import FEATURES, PACKAGE_NAME
from ..settings import (
    ConfigurationError,
    CoreSettings,
    settings_reference,
    with_settings_reference,
)

CONFIGURATION_PAGE = Path("docs/configuration.md")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def run(write: Callable[[str], object] = print) -> int:
    """Run every check, writing a line each; 0 when all pass, 1 otherwise."""
    checks: list[Check] = []

    def report(check: Check) -> None:
        checks.append(check)
        write(check.line())

    try:
        settings = importlib.import_module(f"{PACKAGE_NAME}.settings").Settings.load()
    except ConfigurationError as error:
        report(Check("settings", False, str(error)))
        return 1
    report(Check("settings", True, "every setting loads"))
    report(_token_counter(settings))
    report(asyncio.run(_model(settings)))
    if "sessions" in FEATURES:
        report(asyncio.run(_redis(settings)))
    if "mcp_tools" in FEATURES:
        for server in settings.mcp_servers:
            report(asyncio.run(_mcp_server(settings, server)))
    return 0 if all(check.ok for check in checks) else 1


def _token_counter(settings: CoreSettings) -> Check:
    try:
        count = build_token_counter(settings)
    except ConfigurationError as error:
        return Check("token counter", False, str(error))
    return Check("token counter", True, f"{settings.token_counter}: 'ping' is {count('ping')}")


def shown_url(url: str) -> str:
    """A URL as it may be printed: without the user and password it may carry."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


async def _model(settings: CoreSettings) -> Check:
    if settings.model_provider == "offline":
        return Check("model", True, "the offline model answers in-process; no server to call")
    base_url = str(settings.model_base_url) if settings.model_base_url else None
    where = shown_url(base_url) if base_url else "api.openai.com"
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else "unused"
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key=key, max_retries=0, timeout=settings.model_timeout_seconds
    )
    try:
        await client.chat.completions.create(
            model=settings.model_name,
            messages=[{"role": "user", "content": "ping"}],
            max_tokens=1,
        )
    except openai.APITimeoutError:
        why = f"timeout: no answer within MODEL_TIMEOUT_SECONDS={settings.model_timeout_seconds}"
        return Check("model", False, f"{where}: {why}")
    except openai.APIConnectionError as error:
        return Check("model", False, f"{where}: {_connection_problem(error)}")
    except openai.AuthenticationError:
        return Check("model", False, f"{where}: 401, the server refuses MODEL_API_KEY")
    except openai.PermissionDeniedError:
        return Check("model", False, f"{where}: 403, the key may not use {settings.model_name}")
    except openai.NotFoundError:
        why = (
            f"404, no model {settings.model_name!r} there (MODEL_NAME), or MODEL_BASE_URL lacks "
            "the API's path (often /v1)"
        )
        return Check("model", False, f"{where}: {why}")
    except openai.RateLimitError:
        return Check("model", True, f"{where}: reached with the key, but rate limited now (429)")
    except openai.APIStatusError as error:
        return Check("model", False, f"{where}: the server answered {error.status_code}")
    finally:
        await client.close()
    return Check("model", True, f"{where}: {settings.model_name} answered a one-token call")


def _connection_problem(error: BaseException, otherwise: str | None = None) -> str:
    """What a connection failure was, from the exceptions under the SDK's; `otherwise` when
    none of them says."""
    causes: list[Any] = []
    cause: BaseException | None = error
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            return "DNS: the host name does not resolve"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {cause.reason or cause}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused: nothing listens there"
    text = " ".join(str(cause) for cause in causes).lower()
    if "name or service not known" in text or "nodename nor servname" in text:
        return "DNS: the host name does not resolve"
    if "ssl" in text or "tls" in text:
        return "TLS: the handshake failed"
    if "connection refused" in text or "connect call failed" in text:
        return "connection refused: nothing listens there"
    return otherwise or f"cannot connect ({type(causes[-1]).__name__})"


async def _mcp_server(settings: Any, server: Any) -> Check:
    from ..features.mcp_tools import mcp_server, offered  # rendered only with MCP tools

    session = mcp_server(server, settings)
    name = f"mcp {server.name}"
    try:
        schemas = await session.start()
    except Exception as error:
        return Check(name, False, f"does not start: {type(error).__name__}")
    finally:
        await session.stop()
    tools, left_out = offered(server.name, schemas, settings.mcp_tools_allowed)
    listed = f"{len(tools)} tools: {', '.join(t['name'] for t in tools)}"
    if left_out:
        refused = "; ".join(f"{tool!r} ({problem})" for tool, problem in left_out.items())
        why = "names the model cannot be offered; leave them out with MCP_TOOLS_ALLOWED"
        return Check(name, False, f"{listed}; left out, {why}: {refused}")
    return Check(name, True, listed)


async def _redis(settings: Any) -> Check:
    import redis.asyncio as redis  # only services with sessions have it

    where = shown_url(str(settings.redis_url))
    client = redis.Redis.from_url(
        str(settings.redis_url),
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    try:
        await client.ping()
    except redis.RedisError as error:
        return Check("redis", False, f"{where}: {redis_problem(error, settings)}")
    finally:
        await client.aclose()
    return Check("redis", True, f"{where}: answers")


def redis_problem(error: BaseException, settings: Any) -> str:
    """Why Redis did not answer, as the model check says it of the model server."""
    import redis  # only services with sessions have it

    if isinstance(error, redis.TimeoutError):
        return f"timeout: no answer within REDIS_TIMEOUT_SECONDS={settings.redis_timeout_seconds}"
    if isinstance(error, redis.AuthenticationError):
        return "the server refuses the user or password in REDIS_URL"
    if isinstance(error, redis.ConnectionError):
        # Redis's own words are plain: "Connection closed by server." when it went away.
        return _connection_problem(error, otherwise=str(error))
    return f"{type(error).__name__}: {error}"


def write_settings_reference(page: Path = CONFIGURATION_PAGE) -> int:
    """`doctor --write-settings-reference`: the table of every setting, written into `page`."""
    settings_class = importlib.import_module(f"{PACKAGE_NAME}.settings").Settings
    try:
        markdown = page.read_text(encoding="utf-8")
        page.write_text(
            with_settings_reference(markdown, settings_reference(settings_class)),
            encoding="utf-8",
        )
    except (OSError, ValueError) as error:
        print(f"cannot write the settings table into {page}: {error}", file=sys.stderr)
        return 2
    print(f"wrote the table of {len(settings_class.model_fields)} settings into {page}")
    return 0
