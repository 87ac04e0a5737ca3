"""Background runs: `POST /v1/runs` queues a turn that a worker process executes, and the
client reads it back (`GET /v1/runs/{id}`), follows its events (`GET /v1/runs/{id}/events`,
resumable with `Last-Event-ID` from any process), or is called back (a signed webhook).

A run is the same turn as `/v1/chat`, with the same body, limits, sessions and errors, but
it outlives the request, the client's connection and the process that took it. The queue is
streaq's (`worker.py`); the runs and their events are in Redis (`store.py`). Runs are scoped
by API key, like sessions. A run on a session follows `SESSION_BUSY_POLICY`: under `reject`
a session has one unfinished run at a time; under `queue` its runs line up for it, in the
order workers start them; under `interrupt` a new run cancels the unfinished one.
"""

import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Annotated, Any

import anyio
import redis.asyncio as redis
import structlog
from anyio.abc import TaskGroup, TaskStatus
from coredis.exceptions import RedisError as CoredisError
from fastapi import APIRouter, Body, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from redis.exceptions import RedisError

from ...agent.service import ChatService
from ...context import current_caller
from ...contract import ERROR_RESPONSES, ChatRequest, ChatResponse, ErrorDetail, chat_examples
from ...dependencies import chat_service
from ...errors import ApiError
from ...extensions import extensions
from ...project import ENV_PREFIX, FEATURES
from ...settings import ListSetting, SettingsBase
from .store import IdempotentRun, RunStatus, RunStore, new_run_id, now
from .webhooks import normalised, webhook_target
from .worker import make_queue

log = structlog.get_logger(__name__)
router = APIRouter()
EVENT_ID_MAX = 2**64 - 1  # each half of a Redis stream id


def _within_redis_range(event_id: str) -> str:
    if any(int(half) > EVENT_ID_MAX for half in event_id.split("-")):
        raise ValueError(f"each number of an event id is at most {EVENT_ID_MAX}")
    return event_id


# An event id as the stream gives it, `<milliseconds>-<sequence>`, checked before a stream
# starts: Redis refuses one out of range, and a stream that has begun cannot be a 422.
EventId = Annotated[
    str,
    StringConstraints(pattern=r"^\d{1,20}-\d{1,20}$"),
    AfterValidator(_within_redis_range),
]


class Settings(SettingsBase):
    runs_worker_concurrency: int = Field(
        8, ge=1, le=256, description="Runs one worker process executes at once."
    )
    runs_lease_seconds: float = Field(
        10,
        ge=2,
        le=300,
        description="How long a run stays with a worker that stopped renewing its lease, and "
        "then how long its execution must have shown no sign of life: a dead worker's run is "
        "taken up by another within about three times this, a slow one's is left to it.",
    )
    runs_retry_lost: bool = Field(
        True,
        description="A run whose worker died is tried once more by another worker; off, it "
        "fails with `worker_lost`. A turn is tried again from its start, so tools with "
        "side effects may run twice.",
    )
    runs_ttl_seconds: int = Field(
        604_800, ge=60, description="How long a run and its events are kept after it was made."
    )
    runs_webhook_allowed_urls: ListSetting[str] = Field(
        [],
        description="URLs a run's `webhook_url` must be at or under, separated by commas: the "
        "same scheme, host and port, and the path whole segments below (`/hooks` takes "
        "`/hooks/x`, not `/hooksevil`), compared once both are normalised. Empty: runs take no "
        "webhook.",
    )
    runs_webhook_secret: SecretStr | None = Field(
        None, description="The key webhook bodies are signed with (HMAC-SHA256). Never logged."
    )
    runs_webhook_attempts: int = Field(
        5, ge=1, le=20, description="Calls of a webhook before it counts as failed."
    )

    @field_validator("runs_webhook_allowed_urls")
    @classmethod
    def _webhook_urls_are_urls(cls, prefixes: list[str]) -> list[str]:
        checked = []
        for prefix in prefixes:
            try:
                checked.append(str(normalised(prefix)))
            except ValueError as error:
                raise ValueError(f"{prefix!r}: {error}") from None
        return checked

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> "Settings":
        if self.runs_webhook_allowed_urls and self.runs_webhook_secret is None:
            raise ValueError(
                f"{ENV_PREFIX}RUNS_WEBHOOK_ALLOWED_URLS is set but {ENV_PREFIX}RUNS_WEBHOOK_SECRET "
                "is not: webhooks are signed with it"
            )
        return self

    @model_validator(mode="after")
    def _a_lost_run_can_take_its_session(self) -> "Settings":
        # A run taken over from a dead worker is handed on a lease or more after the death,
        # then waits up to a turn's deadline for its session: the dead worker's hold on it
        # (a session lock, renewed while it lived) must lapse within that.
        lock = getattr(self, "session_lock_seconds", None)
        deadline = getattr(self, "request_deadline_seconds", None)
        if lock is not None and deadline is not None and lock >= self.runs_lease_seconds + deadline:
            raise ValueError(
                f"{ENV_PREFIX}SESSION_LOCK_SECONDS={lock} must be below {ENV_PREFIX}RUNS_LEASE_"
                f"SECONDS={self.runs_lease_seconds} plus {ENV_PREFIX}REQUEST_DEADLINE_SECONDS="
                f"{deadline}: a run taken over from a worker that died waits no longer than that "
                "for the dead worker's hold on its session to lapse"
            )
        return self


class RunRequest(ChatRequest):
    webhook_url: str | None = Field(
        None,
        max_length=2_000,
        description="Called with the finished run, signed; must be under one of "
        "`RUNS_WEBHOOK_ALLOWED_URLS`. The URL called is this one normalised (dot segments "
        "resolved, the default port left out).",
    )


class Run(BaseModel):
    run_id: str
    status: RunStatus
    attempt: int = Field(description="Executions so far: more than 1 after a worker was lost.")
    worker: str | None = Field(None, description="The worker executing it last: host-pid.")
    session_id: str | None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    result: ChatResponse | None = Field(None, description="The `/v1/chat` response, once answered.")
    error: ErrorDetail | None = None
    webhook: str | None = Field(None, description="`delivered` or `failed`, once tried.")


class Runs:
    """What the routes and the worker share: the store, the queue, the webhook settings."""

    def __init__(self, store: RunStore, settings: Settings, tasks: TaskGroup) -> None:
        self.store = store
        self.queue, self._execute_run = make_queue(settings)
        self._tasks = tasks
        self._connecting = anyio.Lock()
        self._connected = False
        self._closing = anyio.Event()
        self.webhook_secret = (
            settings.runs_webhook_secret.get_secret_value() if settings.runs_webhook_secret else ""
        )
        self.webhook_attempts = settings.runs_webhook_attempts
        self.webhook_allowed = settings.runs_webhook_allowed_urls
        self.busy_policy: str = settings.session_busy_policy  # type: ignore[attr-defined]

    async def _connect(self) -> None:
        """Connect the queue at its first use: the service starts while Redis is down, as
        sessions let it. The connection is held by a task of the service's life, not by the
        request that needed it first: the queue's client must be closed in the task and the
        context that opened it, or shutting down fails."""
        async with self._connecting:
            if not self._connected:
                await self._tasks.start(self._hold_queue)
                self._connected = True

    async def _hold_queue(self, *, task_status: TaskStatus[None]) -> None:
        async with self.queue:
            task_status.started()
            await self._closing.wait()

    def close(self) -> None:
        """Let the queue's connection, if opened, close."""
        self._closing.set()

    async def enqueue(self, run_id: str) -> None:
        await self._connect()
        task = self._execute_run.enqueue(run_id)
        task.id = run_id
        await task

    async def view(self, run_id: str, caller: str | None = None) -> Run:
        """The run as its caller sees it; 404 for a missing run or another caller's."""
        record = await self.store.get(run_id)
        if record is None or (caller is not None and record["caller"] != caller):
            raise ApiError(404, "not_found", f"No run {run_id!r}.")
        return Run(
            run_id=run_id,
            status=record["status"],  # type: ignore[arg-type]
            attempt=int(record["attempt"]),
            worker=record.get("worker"),
            session_id=record["session_id"] or None,
            created_at=float(record["created_at"]),
            started_at=float(record["started_at"]) if record.get("started_at") else None,
            finished_at=float(record["finished_at"]) if record.get("finished_at") else None,
            result=ChatResponse.model_validate_json(record["result"])
            if record.get("result")
            else None,
            error=ErrorDetail.model_validate_json(record["error"]) if record.get("error") else None,
            webhook=record.get("webhook"),
        )


def install(app: FastAPI, settings: Settings) -> None:
    app.include_router(router)

    @asynccontextmanager
    async def runs_running(app: FastAPI) -> AsyncIterator[None]:
        # The sessions feature's Redis: runs need sessions. Hundreds of clients may follow
        # runs at once: their commands wait for one of a bounded set of connections.
        url = str(settings.redis_url)  # type: ignore[attr-defined]
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10)
        client = redis.Redis(connection_pool=pool)
        store = RunStore(client, ttl_seconds=settings.runs_ttl_seconds)
        metrics = None
        if "observability" in FEATURES:
            from .metrics import register

            metrics = register(url)
        try:
            async with anyio.create_task_group() as tasks:
                app.state.runs = Runs(store, settings, tasks)
                try:
                    yield
                finally:
                    app.state.runs.close()
        finally:
            if metrics is not None:
                metrics.close()
            del app.state.runs
            await client.aclose()

    extensions(app).lifespans.append(runs_running)


async def the_runs(request: Request) -> Runs:
    return request.app.state.runs


async def owned_run(run_id: str, runs: Annotated[Runs, Depends(the_runs)]) -> Run:
    """The caller's run; 404 (before any stream starts) for another's or none."""
    with reachable():
        return await runs.view(run_id, current_caller())


@contextmanager
def reachable() -> Iterator[None]:
    """Redis failing under a request: a 503 to retry, as for sessions."""
    try:
        yield
    except (RedisError, CoredisError, OSError) as error:
        log.error("run store unavailable", error=f"{type(error).__name__}: {error}")
        raise ApiError(
            503,
            "run_store_unavailable",
            "The run store cannot be reached; retry shortly.",
            {"Retry-After": "1"},
        ) from error


RUN_ERRORS = ERROR_RESPONSES | {404: {"description": "No such run (of this caller)."}}


@router.post(
    "/v1/runs",
    status_code=202,
    response_model=Run,
    summary="Queue a turn for a worker; answered at once with the run to follow",
    responses=RUN_ERRORS
    | {
        409: {"description": "The session has an unfinished run (`SESSION_BUSY_POLICY=reject`)."},
        422: {
            "description": "The body is not valid, the webhook is not allowed, or the "
            "`Idempotency-Key` was sent before with another body (`idempotency_key_reused`)."
        },
    },
)
async def create_run(
    # A chat body is a run's body: the API docs page offers the same examples.
    body: Annotated[RunRequest, Body(openapi_examples=chat_examples())],
    service: Annotated[ChatService, Depends(chat_service)],
    runs: Annotated[Runs, Depends(the_runs)],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    service.check_limits(body)
    with reachable():
        return await _create(body, runs, idempotency_key)


async def _create(body: RunRequest, runs: Runs, idempotency_key: str | None) -> JSONResponse:
    caller = current_caller()
    webhook_url = None if body.webhook_url is None else _webhook(body.webhook_url, runs)
    request = body.model_dump(mode="json", exclude={"webhook_url"}, exclude_none=True)
    fingerprint = _fingerprint(caller, request, webhook_url)
    if idempotency_key is not None:
        earlier = await runs.store.earlier(caller, idempotency_key)
        if earlier is not None:
            return await _replay(earlier, fingerprint, runs)
    run_id = new_run_id()
    if body.session_id is not None:
        await _take_session(runs, caller, body.session_id, run_id)
    try:
        earlier = await runs.store.create(
            run_id, caller, request, webhook_url, idempotency_key, fingerprint
        )
        if earlier is None:
            await runs.enqueue(run_id)
    except BaseException:
        await _abandon(runs, caller, body.session_id, run_id)
        raise
    if earlier is not None:  # the same key, sent twice at once
        if body.session_id is not None:
            await runs.store.release_session(caller, body.session_id, run_id)
        return await _replay(earlier, fingerprint, runs)
    return _answer(await runs.view(run_id), replayed=False)


async def _take_session(runs: Runs, caller: str, session_id: str, run_id: str) -> None:
    """Make `run_id` the session's unfinished run, as `SESSION_BUSY_POLICY` says: 409 while
    there is one (`reject`); the one there is, cancelled (`interrupt`). Under `queue` a
    session's runs are not counted: their turns wait in the session's line."""
    if runs.busy_policy == "queue":
        return
    if runs.busy_policy == "interrupt":
        earlier = await runs.store.take_session(caller, session_id, run_id)
        if earlier is not None:
            # Its execution stops at its next beat; the new run's turn takes the session
            # from it meanwhile, if it still holds it.
            interrupted = await runs.store.transition(
                earlier,
                from_statuses=["queued", "running"],
                event=("cancelled", {"interrupted_by": run_id}),
                status="cancelled",
                finished_at=now(),
            )
            if interrupted:
                log.info("run interrupted by a newer one", run=earlier, by=run_id)
        return
    holder = await runs.store.claim_session(caller, session_id, run_id)
    if holder is not None:
        raise ApiError(
            409,
            "run_in_progress",
            f"Session {session_id!r} has an unfinished run, {holder}: wait for it or cancel it.",
        )


def _webhook(url: str, runs: Runs) -> str:
    """The URL that will be called: `url` normalised, if the allow-list takes it."""
    if not runs.webhook_allowed:
        raise ApiError(
            422,
            "invalid_request",
            f"webhook_url: this service calls no webhooks ({ENV_PREFIX}RUNS_WEBHOOK_"
            "ALLOWED_URLS is empty)",
        )
    try:
        return webhook_target(url, runs.webhook_allowed)
    except ValueError as error:
        raise ApiError(
            422,
            "invalid_request",
            f"webhook_url: {error} (see {ENV_PREFIX}RUNS_WEBHOOK_ALLOWED_URLS)",
        ) from None


def _fingerprint(caller: str, request: Mapping[str, Any], webhook_url: str | None) -> str:
    """What a retry with the same idempotency key must repeat: the caller and the body as
    parsed, so that a retry spelling the same JSON differently is still the same request."""
    canonical = json.dumps([caller, request, webhook_url], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _replay(earlier: IdempotentRun, fingerprint: str, runs: Runs) -> JSONResponse:
    """The run the idempotency key made, if this is the request that made it."""
    if earlier.fingerprint != fingerprint:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was sent before with another body: send a new key for a "
            "new run, or the same body to read the run it made.",
        )
    return _answer(await runs.view(earlier.run_id), replayed=True)


async def _abandon(runs: Runs, caller: str, session_id: str | None, run_id: str) -> None:
    """Undo what a POST that failed half-way left: a run stored but never queued would
    wait forever, holding its session."""
    error = ApiError(503, "run_not_queued", "The run could not be queued; send it again.")
    with suppress(RedisError, CoredisError, OSError):  # Redis may be why the POST failed
        await runs.store.transition(
            run_id,
            from_statuses=["queued"],
            event=("error", error.body()),
            status="failed",
            error=json.dumps(error.body()["error"]),
            finished_at=now(),
        )
        if session_id is not None:
            await runs.store.release_session(caller, session_id, run_id)


def _answer(run: Run, *, replayed: bool) -> JSONResponse:
    headers = {"Location": f"/v1/runs/{run.run_id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(run.model_dump(mode="json"), status_code=202, headers=headers)


@router.get(
    "/v1/runs/{run_id}",
    summary="A run: its status and, once answered, its result",
    responses={404: {"description": "No such run (of this caller)."}},
)
async def get_run(run: Annotated[Run, Depends(owned_run)]) -> Run:
    return run


@router.post(
    "/v1/runs/{run_id}/cancel",
    status_code=202,
    summary="Cancel a run: a queued one never starts, a running one stops",
    responses={409: {"description": "The run has finished."}},
)
async def cancel_run(
    run: Annotated[Run, Depends(owned_run)], runs: Annotated[Runs, Depends(the_runs)]
) -> Run:
    with reachable():
        return await _cancel(run, runs)


async def _cancel(run: Run, runs: Runs) -> Run:
    """Cancelled here and now, whoever holds the run: a queued one is never started, and the
    execution of a running one, finding it no longer its own at its next beat, stops its
    turn. Nothing depends on that worker being alive."""
    run_id = run.run_id
    cancelled = await runs.store.transition(
        run_id,
        from_statuses=["queued", "running"],
        event=("cancelled", {}),
        status="cancelled",
        finished_at=now(),
    )
    if not cancelled:
        raise ApiError(409, "run_finished", f"Run {run_id} has finished: {run.status}.")
    if run.session_id:
        await runs.store.release_session(current_caller(), run.session_id, run_id)
    return await runs.view(run_id)


@router.get(
    "/v1/runs/{run_id}/events",
    response_class=EventSourceResponse,
    summary="A run's events as Server-Sent Events, each with an id; resumable",
    responses={404: {"description": "No such run (of this caller)."}},
)
async def run_events(
    run: Annotated[Run, Depends(owned_run)],
    runs: Annotated[Runs, Depends(the_runs)],
    last_event_id: Annotated[EventId | None, Header()] = None,
    after: Annotated[EventId | None, Query()] = None,
) -> AsyncIterable[ServerSentEvent]:
    """Every event after `Last-Event-ID` (or `after`), in order, then the new ones as they
    come, ending with the run's last: `done` (the `/v1/chat` response), `error` or
    `cancelled`. A finished run with no event after the one asked for ends at once."""
    events = runs.store.events(run.run_id, last_event_id or after or "0")
    async for event_id, event_type, data in events:
        yield ServerSentEvent(raw_data=data, event=event_type, id=event_id)
