"""The load generator: a fixed number of chat turns at a fixed concurrency, canaries checked."""

import asyncio
import secrets
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aiohttp

from .upstream_stub import CANARY, TOOL_MARKER, expected_reply

# `team` is a plain turn, answered by a two-agent team; `openai` a plain turn, sent as an
# OpenAI chat completion to a URL ending in `/chat/completions` (and as itself elsewhere).
Scenario = Literal["plain", "tool", "team", "openai"]


@dataclass(frozen=True)
class LoadRun:
    """What one stretch of load saw, before summing up."""

    latencies: list[float]
    seconds: float
    errors: int
    cross_talk: int


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cross_talk: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @classmethod
    def of(cls, runs: Sequence[LoadRun]) -> "LoadResult":
        latencies = [latency for run in runs for latency in run.latencies]
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        return cls(
            requests=len(latencies),
            seconds=sum(run.seconds for run in runs),
            p50_ms=cuts[49] * 1000,
            p99_ms=cuts[98] * 1000,
            errors=sum(run.errors for run in runs),
            cross_talk=sum(run.cross_talk for run in runs),
        )


async def drive(
    url: str, api_key: str, scenario: Scenario, concurrency: int, requests: int
) -> LoadRun:
    """Send `requests` turns to `url`, `concurrency` at a time over kept-alive connections.

    A turn is an error when it fails or is answered with anything but 200, and cross-talk
    when its reply names another turn's canary or misses its own.
    """
    latencies: list[float] = []
    errors = cross_talk = 0
    openai = url.endswith("/chat/completions")
    remaining = iter(range(requests))
    headers = {"Authorization": f"Bearer {api_key}"}
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def one_turn(session: aiohttp.ClientSession) -> None:
        nonlocal errors, cross_talk
        canary = f"canary-{secrets.token_hex(8)}"
        task = f"{TOOL_MARKER} for {canary}" if scenario == "tool" else f"hello from {canary}"
        body: dict[str, object] = {"messages": [{"role": "user", "content": task}]}
        if openai:
            body["model"] = "bench"
        started = time.perf_counter()
        try:
            async with session.post(url, json=body, headers=headers) as response:
                answer = await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, ValueError):
            answer = None
        latencies.append(time.perf_counter() - started)
        reply = None
        if answer is not None:
            reply = answer["choices"][0]["message"]["content"] if openai else answer["reply"]
        if reply is None:
            errors += 1
        elif reply != expected_reply(canary, after_tool=scenario == "tool"):
            if CANARY.findall(reply) == [canary]:
                errors += 1  # its own canary only, but not the answer the stub gives
            else:
                cross_talk += 1

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            await one_turn(session)

    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return LoadRun(latencies, seconds, errors, cross_talk)
