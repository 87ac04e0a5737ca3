"""Runs and their events in Redis: the record every process reads, and the event stream a
client can resume.

A run is a hash, `run:<id>`; its events are a Redis Stream, `run-events:<id>`, whose entry
ids are the SSE event ids. Every change of a run's status is one Lua script that checks the
status (and the attempt) it expects, sets the new fields and appends the event, so that two
workers can never both finish a run, and a run's last event is written with its last status
or not at all.
"""

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import redis.asyncio as redis

RunStatus = Literal[
    "queued",
    "running",
    "awaiting_input",
    "awaiting_approval",
    "completed",
    "failed",
    "cancelled",
]
FINISHED: frozenset[str] = frozenset(
    {"awaiting_input", "awaiting_approval", "completed", "failed", "cancelled"}
)
# The event that ends a run's stream, by how it ended.
FINAL_EVENTS = frozenset({"done", "error", "cancelled"})
EVENTS_MAX = 10_000  # per run: a runaway stream of deltas cannot fill Redis
POLL_SECONDS = 0.2  # how soon a follower sees a new event

STATS_KEY = "run-stats"  # runs queued and running now, and finished ones by status, ever

# KEYS: run, events, stats. ARGV: statuses it may be in (comma-separated), the attempt it
# must be at ('' for any), the event's type and data ('' for none), the events' time to
# live, then the fields to set, as name, value pairs. A change of status is counted too.
_TRANSITION = f"""
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local allowed = false
for expected in string.gmatch(ARGV[1], '[^,]+') do
  if expected == status then allowed = true end
end
if not allowed then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] then return 0 end
local new, finished
for i = 6, #ARGV, 2 do
  if ARGV[i] == 'status' then new = ARGV[i + 1] end
  if ARGV[i] == 'finished_at' then finished = tonumber(ARGV[i + 1]) end
end
if new and new ~= status then
  redis.call('HINCRBY', KEYS[3], 'in_' .. status, -1)
  if new == 'running' then redis.call('HINCRBY', KEYS[3], 'in_running', 1) end
  if finished then
    local began = redis.call('HGET', KEYS[1], 'started_at')
      or redis.call('HGET', KEYS[1], 'created_at')
    redis.call('HINCRBY', KEYS[3], 'finished_' .. new, 1)
    redis.call('HINCRBYFLOAT', KEYS[3], 'seconds_' .. new, finished - tonumber(began))
  end
end
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', {EVENTS_MAX}, '*', 'type', ARGV[3], 'data', ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
"""


class IdempotentRun(NamedTuple):
    """The run an idempotency key made, and the fingerprint of the request that made it."""

    run_id: str
    fingerprint: str

    @classmethod
    def parse(cls, stored: bytes) -> "IdempotentRun":
        run_id, _, fingerprint = stored.decode().partition(" ")
        return cls(run_id, fingerprint)


def new_run_id() -> str:
    return f"run_{secrets.token_hex(12)}"


def _run_key(run_id: str) -> str:
    return f"run:{run_id}"


def _events_key(run_id: str) -> str:
    return f"run-events:{run_id}"


class RunStore:
    def __init__(self, client: redis.Redis, *, ttl_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._transition = client.register_script(_TRANSITION)

    async def create(
        self,
        run_id: str,
        caller: str,
        request: Mapping[str, Any],
        webhook_url: str | None,
        idempotency_key: str | None,
        fingerprint: str,
    ) -> IdempotentRun | None:
        """Store a new queued run (an idempotency key keeps the request's `fingerprint`);
        with an idempotency key already used, store nothing and return the run it made."""
        if idempotency_key is not None:
            key = f"run-idempotency:{caller}:{idempotency_key}"
            made = f"{run_id} {fingerprint}"
            if not await self._client.set(key, made, nx=True, ex=self._ttl):
                earlier = await self._client.get(key)
                return IdempotentRun.parse(earlier) if earlier else None
        fields = {
            "id": run_id,
            "caller": caller,
            "status": "queued",
            "attempt": "0",
            "request": json.dumps(request),
            "session_id": request.get("session_id") or "",
            "webhook_url": webhook_url or "",
            "created_at": now(),
        }
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(_run_key(run_id), mapping=fields)
            pipe.expire(_run_key(run_id), self._ttl)
            pipe.hincrby(STATS_KEY, "in_queued", 1)
            await pipe.execute()
        return None

    async def earlier(self, caller: str, idempotency_key: str) -> IdempotentRun | None:
        """The run an idempotency key already made, if any."""
        found = await self._client.get(f"run-idempotency:{caller}:{idempotency_key}")
        return IdempotentRun.parse(found) if found else None

    async def get(self, run_id: str) -> dict[str, str] | None:
        stored = await self._client.hgetall(_run_key(run_id))
        return {k.decode(): v.decode() for k, v in stored.items()} or None

    async def transition(
        self,
        run_id: str,
        *,
        from_statuses: Sequence[str],
        at_attempt: int | None = None,
        event: tuple[str, Mapping[str, Any]] | None = None,
        **fields: str,
    ) -> bool:
        """Set `fields` and append `event`, if the run is in one of `from_statuses` (at
        attempt `at_attempt`, when given); False, changing nothing, if it is not."""
        event_type, data = event if event else ("", {})
        arguments = [
            ",".join(from_statuses),
            "" if at_attempt is None else str(at_attempt),
            event_type,
            json.dumps(data) if event else "",
            self._ttl,
            *[item for pair in fields.items() for item in pair],
        ]
        keys = [_run_key(run_id), _events_key(run_id), STATS_KEY]
        done = await self._transition(keys=keys, args=arguments)
        return bool(done)

    async def append(
        self, run_id: str, attempt: int, event_type: str, data: Mapping[str, Any]
    ) -> bool:
        """Add an event of a running attempt; False if the attempt is no longer the run's."""
        return await self.transition(
            run_id, from_statuses=["running"], at_attempt=attempt, event=(event_type, data)
        )

    async def events(self, run_id: str, after: str) -> AsyncIterator[tuple[str, str, str]]:
        """The run's events after the one with id `after` ("0" for all), as (id, type, data),
        waiting for new ones until the final event, or none if the run ended at or before
        `after`."""
        key = _events_key(run_id)
        while True:
            # Polled rather than blocking: a blocked read holds a connection for as long as
            # it waits, and a process follows hundreds of runs at once. The status is read
            # with the events, in one transaction: a run's final event is written with its
            # final status, so a finished run with nothing after `after` has nothing more.
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hget(_run_key(run_id), "status")
                pipe.xread({key: after}, count=100)
                status, found = await pipe.execute()
            if not found:
                if status is None or status.decode() in FINISHED:
                    return  # expired under the reader, or ended at or before `after`
                await asyncio.sleep(POLL_SECONDS)
                continue
            for entry_id, entry in found[0][1]:
                after = entry_id.decode()
                event_type = entry[b"type"].decode()
                yield after, event_type, entry[b"data"].decode()
                if event_type in FINAL_EVENTS:
                    return

    async def claim_session(self, caller: str, session_id: str, run_id: str) -> str | None:
        """Make `run_id` the session's one unfinished run; None if it is, else the run that
        already is."""
        key = f"run-session:{caller}:{session_id}"
        if await self._client.set(key, run_id, nx=True, ex=self._ttl):
            return None
        holder = await self._client.get(key)
        return holder.decode() if holder else None

    async def take_session(self, caller: str, session_id: str, run_id: str) -> str | None:
        """Make `run_id` the session's one unfinished run, whatever run was; that run, if any."""
        key = f"run-session:{caller}:{session_id}"
        earlier = await self._client.set(key, run_id, ex=self._ttl, get=True)
        return earlier.decode() if earlier else None

    async def release_session(self, caller: str, session_id: str, run_id: str) -> None:
        key = f"run-session:{caller}:{session_id}"
        holder = await self._client.get(key)
        if holder is not None and holder.decode() == run_id:
            await self._client.delete(key)


def now() -> str:
    return f"{time.time():.3f}"
