"""A finished run's webhook: its body signed with HMAC-SHA256, retried with backoff.

The receiver checks `X-Run-Signature: sha256=<hex>` against HMAC-SHA256 of
`<X-Run-Timestamp>.<body>` under the shared secret (`RUNS_WEBHOOK_SECRET`), and refuses old
timestamps, so a captured call cannot be replayed later.
"""

import asyncio
import hashlib
import hmac
import re
import string
import time
from collections.abc import Sequence

import httpx
import structlog

log = structlog.get_logger(__name__)
_PERCENT_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")


def normalised(url: str) -> httpx.URL:
    """`url` as it is called: parsed by httpx (scheme and host in lower case, the default
    port left out, dot segments removed), unreserved characters percent-decoded and other
    escapes in upper case (RFC 3986, 6.2.2), so that one address has one spelling; the
    fragment, never sent, dropped. ValueError, saying why, for what cannot be called safely."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ValueError(f"not a valid URL ({error})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("not an absolute http:// or https:// URL")
    if parsed.userinfo:
        raise ValueError("a user name or password in the URL is not allowed")
    if parsed.port is not None and not 0 < parsed.port < 65_536:
        raise ValueError(f"port {parsed.port} is out of range")
    if _STRAY_PERCENT.search(_raw_path(parsed)):
        raise ValueError("a '%' in the path that starts no escape")
    path = _PERCENT_ESCAPE.sub(_unescaped_if_unreserved, _raw_path(parsed))
    # A receiver or a proxy before it may decode these and read another path than ours.
    if "%2F" in path or "%5C" in path or "\\" in path:
        raise ValueError("an encoded '/' or a '\\' in the path is not allowed")
    return parsed.copy_with(path=path, fragment=None)  # copy_with removes dot segments


def _raw_path(url: httpx.URL) -> str:
    return url.raw_path.decode("ascii").partition("?")[0]


def _unescaped_if_unreserved(escape: re.Match[str]) -> str:
    character = chr(int(escape[1], 16))
    return character if character in _UNRESERVED else escape[0].upper()


def webhook_target(url: str, prefixes: Sequence[str]) -> str:
    """`url` normalised, if it is under one of `prefixes`: the same scheme, host and port,
    and a path that is the prefix's or below it, segment by segment (`/hooks` takes
    `/hooks/x`, not `/hooksevil`). Nothing else may be called, so that no caller can aim the
    service at an address of its own network. ValueError, saying why, otherwise."""
    target = normalised(url)
    segments = _raw_path(target).split("/")
    for prefix in map(normalised, prefixes):
        under = _raw_path(prefix).rstrip("/").split("/")
        if (target.scheme, target.host, target.port) == (
            prefix.scheme,
            prefix.host,
            prefix.port,
        ) and segments[: len(under)] == under:
            return str(target)
    raise ValueError("not under any of the allowed URLs")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


async def deliver(url: str, body: bytes, secret: str, attempts: int, run_id: str) -> bool:
    """POST `body` to `url` until it answers 2xx, at most `attempts` times, waiting 1, 2,
    4 ... seconds between tries; whether it was delivered."""
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
        for attempt in range(1, attempts + 1):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Run-Id": run_id,
                "X-Run-Timestamp": timestamp,
                "X-Run-Signature": signature(secret, timestamp, body),
            }
            try:
                response = await client.post(url, content=body, headers=headers)
                if response.is_success:
                    return True
                problem = f"status {response.status_code}"
            except httpx.HTTPError as error:
                problem = type(error).__name__
            log.warning("webhook not delivered", run_id=run_id, attempt=attempt, problem=problem)
            if attempt < attempts:
                await asyncio.sleep(2 ** (attempt - 1))
    return False
