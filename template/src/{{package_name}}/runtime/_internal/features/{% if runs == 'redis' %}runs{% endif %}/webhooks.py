"""A finished run's webhook: its body signed with HMAC-SHA256, retried with backoff.

The receiver checks `X-Run-Signature: sha256=<hex>` against HMAC-SHA256 of
`<X-Run-Timestamp>.<body>` under the shared secret (`RUNS_WEBHOOK_SECRET`), and refuses old
timestamps, so a captured call cannot be replayed later.
"""

import asyncio
import hashlib
import hmac
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx
import structlog

log = structlog.get_logger(__name__)


def allowed(url: str, prefixes: Sequence[str]) -> bool:
    """Whether `url` is under one of `prefixes`: same scheme, host and port, and a path
    that starts with the prefix's. Nothing else may be called, so that no caller can aim
    the service at an address of its own network."""
    target = urlsplit(url)
    for prefix in prefixes:
        allowed_url = urlsplit(prefix)
        if (
            (target.scheme, target.hostname, target.port)
            == (allowed_url.scheme, allowed_url.hostname, allowed_url.port)
            and not target.username
            and target.path.startswith(allowed_url.path or "/")
        ):
            return True
    return False


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
