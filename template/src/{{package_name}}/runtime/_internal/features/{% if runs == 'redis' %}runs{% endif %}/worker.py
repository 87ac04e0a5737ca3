"""Runs executed by worker processes (`<project_slug> worker`), from a streaq queue in Redis.

A worker runs the service's own app (its start-up builds the model client, the MCP servers,
the session store) without serving HTTP, and answers each run with a turn on the same path as
`/v1/chat`. streaq keeps a lease on each run being executed, renewed by the worker while it
lives: when a worker dies, another one is handed the run once the lease is out
(`RUNS_LEASE_SECONDS`). The run's own record decides what happens then, not streaq: an
execution beats in the record while it runs, so a run handed over whose execution still beats
(a worker that was only slow, or cut off by a Redis stall) is left to it, and one whose beat
stopped for a lease is tried again (`RUNS_RETRY_LOST`) or fails with `worker_lost`. An
execution that finds the run no longer its own (cancelled, or taken over) stops its turn at
its next beat. On SIGTERM a worker takes no new run and finishes those it has, for as long as
a turn may last.
"""

import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from importlib import import_module
from typing import Any, TypeVar

import anyio
import structlog
from fastapi import FastAPI
from redis.exceptions import RedisError
from streaq import StreaqRetry, Worker

from ...agent.service import never_disconnected
from ...agent.turn import TextDelta, ToolCallStarted
from ...contract import ChatRequest, ChatResponse
from ...errors import ApiError, internal_error
from ...project import PACKAGE_NAME
from .store import FINISHED, RunStore, now
from .webhooks import deliver

log = structlog.get_logger(__name__)
QUEUE = "runs"
BEAT_SECONDS = 0.5  # how often an execution shows it lives, and learns it was cancelled
# Errors of a turn that say only that its session was not free or not reachable yet: the
# turn had not started, so it is tried again until `Execution.session_wait` is spent.
WAIT_FOR_SESSION = frozenset({"session_busy", "session_store_unavailable"})
STORE_RETRY_SECONDS = 0.5
STORE_ERRORS = (RedisError, OSError)
T = TypeVar("T")
TRANSITION_TERMS = frozenset({"from_statuses", "at_attempt", "event"})  # not fields it sets


@dataclass(frozen=True)
class Execution:
    """How a worker executes runs, from the settings."""

    executions: int  # of one run: 2 when a lost run is tried again
    lease: float  # seconds without a beat after which an execution counts as lost
    session_wait: float  # how long a run waits for its session to be free
    worker_id: str


def make_queue(settings: Any, service: Any = None) -> tuple[Worker[Any], Any]:
    """The queue, and the task that executes a run. `service`, in a worker, is the async
    context manager that runs the service for the worker's life; the API only enqueues."""
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    execution = Execution(
        executions=2 if settings.runs_retry_lost else 1,
        lease=settings.runs_lease_seconds,
        # A turn holds its session at most its deadline; a dead holder's hold lapses sooner
        # than that after the run was handed over (see the settings' check).
        session_wait=settings.request_deadline_seconds,
        worker_id=worker_id,
    )
    queue: Worker[Any] = Worker(
        redis_url=str(settings.redis_url),
        queue_name=QUEUE,
        concurrency=settings.runs_worker_concurrency,
        idle_timeout=settings.runs_lease_seconds,
        # Every turn in hand may run to its deadline before the worker stops.
        grace_period=int(settings.request_deadline_seconds) + 5,
        id=worker_id,
        **({"lifespan": service} if service else {}),
    )

    # streaq may hand a run over any number of times (a stall, a slow worker): the run's
    # record counts its executions and ends it, so streaq's own count must never drop it.
    @queue.task(name="execute_run", max_tries=None, ttl=3600)
    async def execute_run(run_id: str) -> None:
        app: FastAPI = queue.context
        try:
            await execute(app, run_id, execution)
        except STORE_ERRORS as error:
            # Redis away for longer than the writes wait: the run goes back to the queue
            # rather than being dropped by it, and its record decides again then.
            raise StreaqRetry(delay=int(execution.lease)) from error

    return queue, execute_run


def run_worker(app_path: str) -> int:
    """Execute runs until SIGTERM, with the app at `app_path` (`MODULE:NAME`, an app or a
    function making one)."""
    from ...http.app import load_app  # here: the app factory imports every feature, this one too

    settings = import_module(f"{PACKAGE_NAME}.settings").Settings.load()

    @asynccontextmanager
    async def service_running() -> AsyncIterator[FastAPI]:
        app = load_app(app_path)
        async with app.router.lifespan_context(app):
            yield app

    queue, _ = make_queue(settings, service_running)
    queue.run_sync()
    return 0


async def persistently(write: Callable[[], Awaitable[T]], seconds: float) -> T:
    """`write`, tried again while Redis cannot be reached, for up to `seconds`: a run's
    record must not stay unfinished because Redis was away when its end was written."""
    deadline = anyio.current_time() + seconds
    while True:
        try:
            return await write()
        except STORE_ERRORS as error:
            if anyio.current_time() > deadline:
                raise
            log.warning("run store unavailable, trying again", error=type(error).__name__)
            await anyio.sleep(STORE_RETRY_SECONDS)


async def transitioned(store: RunStore, run_id: str, patience: float, **transition: Any) -> bool:
    """`store.transition(run_id, **transition)`, tried again while Redis cannot be reached;
    whether it landed. A try whose answer was lost (Redis carried it out as the connection
    failed) makes the next one find the run changed: the record holding exactly the fields
    this transition sets (its own times among them) says it was this one."""
    if await persistently(partial(store.transition, run_id, **transition), patience):
        return True
    fields = {k: v for k, v in transition.items() if k not in TRANSITION_TERMS}
    current = await persistently(partial(store.get, run_id), patience)
    return current is not None and all(current.get(k) == v for k, v in fields.items())


async def execute(app: FastAPI, run_id: str, execution: Execution) -> None:
    """Execute a run, or record why it cannot be: every way out leaves it finished, but a
    cancellation by the worker's own shutdown and a Redis out of reach for longer than the
    writes wait, after which the queue delivers it again."""
    store: RunStore = app.state.runs.store
    patience = execution.session_wait + execution.lease
    record = await persistently(lambda: store.get(run_id), patience)
    if record is None or record["status"] in FINISHED:
        return
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=run_id, api_key_id=record["caller"])
    if record["status"] == "running":
        record = await _when_lost(store, record, execution.lease)
        if record is None:
            return  # its execution lives on, or it ended: this hand-over was needless
        lost = int(record["attempt"])
        log.warning("run taken over from a lost worker", attempt=lost)
        if lost >= execution.executions:
            error = ApiError(
                500,
                "worker_lost",
                f"The worker executing this run stopped (attempt {lost} of "
                f"{execution.executions}).",
            )
            await _finish(app, record, lost, "failed", ("error", error.body()), patience)
            return
    previous = int(record["attempt"])
    attempt = previous + 1
    start = {"status": "running", "attempt": str(attempt), "worker": execution.worker_id}
    start |= {"started_at": now(), "beat": now()}
    started = await transitioned(
        store,
        run_id,
        patience,
        from_statuses=[record["status"]],
        at_attempt=previous,
        event=("started", {"attempt": attempt}),
        **start,
    )
    if not started:  # cancelled while queued, or another worker took it first
        return
    outcome = await _answer_while_beating(app, store, run_id, attempt, record, execution)
    if outcome is None:
        log.info("run no longer this execution's: its turn stopped", attempt=attempt)
        return
    status, final = outcome
    await _finish(app, record, attempt, status, final, patience)


async def _when_lost(
    store: RunStore, record: Mapping[str, str], lease: float
) -> dict[str, str] | None:
    """The run, once the execution holding it has not beaten for `lease`; None if it ends,
    or another execution takes it, first."""
    run_id, attempt = record["id"], record["attempt"]
    last_beat, since = record.get("beat"), anyio.current_time()
    while True:
        await anyio.sleep(BEAT_SECONDS)
        current = await persistently(lambda: store.get(run_id), lease)
        if current is None or current["status"] != "running" or current["attempt"] != attempt:
            return None
        if current.get("beat") != last_beat:
            last_beat, since = current.get("beat"), anyio.current_time()
        elif anyio.current_time() - since >= lease:
            return current


async def _answer_while_beating(
    app: FastAPI,
    store: RunStore,
    run_id: str,
    attempt: int,
    record: Mapping[str, str],
    execution: Execution,
) -> tuple[str, tuple[str, Mapping[str, Any]]] | None:
    """The turn's status and final event, beating meanwhile; None, the turn stopped, as
    soon as a beat finds the run no longer this attempt's."""
    outcome = None
    async with anyio.create_task_group() as tasks:

        async def answer() -> None:
            nonlocal outcome
            outcome = await _answer(app, store, run_id, attempt, record, execution.session_wait)
            tasks.cancel_scope.cancel()

        tasks.start_soon(answer)
        while True:
            await anyio.sleep(BEAT_SECONDS)
            try:
                mine = await store.transition(
                    run_id, from_statuses=["running"], at_attempt=attempt, beat=now()
                )
            except STORE_ERRORS as error:  # the next beat may get through
                log.warning("run beat not written", error=type(error).__name__)
                continue
            if not mine:
                tasks.cancel_scope.cancel()
    return outcome


async def _answer(
    app: FastAPI,
    store: RunStore,
    run_id: str,
    attempt: int,
    record: Mapping[str, str],
    session_wait: float,
) -> tuple[str, tuple[str, Mapping[str, Any]]]:
    """Run the turn, its events appended as they come; the status and final event. A turn
    that cannot begin because its session is held (a `/v1/chat` turn, a dead worker's hold
    not lapsed yet) or out of reach waits its turn, for up to `session_wait`."""
    request = ChatRequest.model_validate_json(record["request"])
    deadline = anyio.current_time() + session_wait
    while True:
        try:
            events = await app.state.chat.stream(
                request, app.state.conversations, never_disconnected
            )
            break
        except ApiError as error:
            if error.type in WAIT_FOR_SESSION and anyio.current_time() < deadline:
                await anyio.sleep(STORE_RETRY_SECONDS)
                continue
            return "failed", ("error", error.body())
        except Exception:
            log.exception("unhandled error")
            return "failed", ("error", internal_error().body())
    try:
        async with aclosing(events):
            async for event in events:
                if isinstance(event, ApiError):
                    return "failed", ("error", event.body())
                if isinstance(event, ChatResponse):
                    return event.status, ("done", event.model_dump(mode="json"))
                kind, data = _event_data(event)
                append = partial(store.append, run_id, attempt, kind, data)
                if not await persistently(append, session_wait):
                    break  # no longer this attempt's run: cancelled, or taken over
    except Exception:
        log.exception("unhandled error")
    return "failed", ("error", internal_error().body())


def _event_data(event: Any) -> tuple[str, dict[str, str]]:
    """A turn's event (text, or a tool call) as the run's event type and data."""
    if isinstance(event, TextDelta):
        return "delta", {"text": event.text, "source": event.source}
    outcome = "error" if getattr(event, "is_error", False) else "ok"
    status = "started" if isinstance(event, ToolCallStarted) else outcome
    return "tool_call", {"source": event.source, "name": event.name, "status": status}


async def _finish(
    app: FastAPI,
    record: Mapping[str, str],
    attempt: int,
    status: str,
    final: tuple[str, Mapping[str, Any]],
    patience: float,
) -> None:
    """End the run as `status`, with its final event and, in the same step, its result or
    error, if `attempt` still holds it; then free its session and call its webhook."""
    runs = app.state.runs
    run_id = record["id"]
    event_type, data = final
    fields = {"status": status, "finished_at": now()}
    if event_type == "done":
        fields["result"] = json.dumps(data)
    elif event_type == "error":
        fields["error"] = json.dumps(data["error"])
    finished = await transitioned(
        runs.store,
        run_id,
        patience,
        from_statuses=["running"],
        at_attempt=attempt,
        event=final,
        **fields,
    )
    if not finished:
        return
    error_type = data["error"]["type"] if event_type == "error" else None
    log.info("run finished", status=status, error_type=error_type)
    if record.get("session_id"):
        await persistently(
            lambda: runs.store.release_session(record["caller"], record["session_id"], run_id),
            patience,
        )
    if record.get("webhook_url"):
        view = await runs.view(run_id)
        body = json.dumps(view.model_dump(mode="json")).encode()
        delivered = await deliver(
            record["webhook_url"],
            body,
            runs.webhook_secret,
            runs.webhook_attempts,
            run_id,
        )
        await runs.store.transition(
            run_id,
            from_statuses=list(FINISHED),
            webhook="delivered" if delivered else "failed",
        )
