"""Runs executed by worker processes (`<project_slug> worker`), from a streaq queue in Redis.

A worker runs the service's own app (its start-up builds the model client, the MCP servers,
the session store) without serving HTTP, and answers each run with a turn on the same path as
`/v1/chat`. streaq keeps a lease on each run being executed, renewed by the worker while it
lives: when a worker dies, another one takes the run up once the lease is out
(`RUNS_LEASE_SECONDS`, some two of them at most), and this module decides whether the run is
tried again (`RUNS_RETRY_LOST`) or fails with `worker_lost`. On SIGTERM a worker takes no new
run and finishes those it has, for as long as a turn may last.
"""

import json
import os
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from importlib import import_module
from typing import Any

import anyio
import structlog
from fastapi import FastAPI
from streaq import Worker

from ...agent.autogen_bridge import TextDelta, ToolCallStarted
from ...agent.service import never_disconnected
from ...errors import ApiError, internal_error
from ...http.schemas import ChatRequest, ChatResponse
from ...project import PACKAGE_NAME
from .store import FINISHED, RunStore, now
from .webhooks import deliver

log = structlog.get_logger(__name__)
QUEUE = "runs"


def make_queue(settings: Any, service: Any = None) -> tuple[Worker[Any], Any]:
    """The queue, and the task that executes a run. `service`, in a worker, is the async
    context manager that runs the service for the worker's life; the API only enqueues."""
    executions = 2 if settings.runs_retry_lost else 1
    queue: Worker[Any] = Worker(
        redis_url=str(settings.redis_url),
        queue_name=QUEUE,
        concurrency=settings.runs_worker_concurrency,
        idle_timeout=settings.runs_lease_seconds,
        # Every turn in hand may run to its deadline before the worker stops.
        grace_period=int(settings.request_deadline_seconds) + 5,
        id=f"{socket.gethostname()}-{os.getpid()}",
        **({"lifespan": service} if service else {}),
    )

    # One try more than the executions allowed: the last only records that the run was lost.
    @queue.task(name="execute_run", max_tries=executions + 1, ttl=3600)
    async def execute_run(run_id: str) -> None:
        app: FastAPI = queue.context
        await execute(app, run_id, execute_run.context.tries, executions, queue.id)

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


async def execute(app: FastAPI, run_id: str, attempt: int, executions: int, worker_id: str) -> None:
    """Execute a run, or record why it cannot be: every way out leaves it finished, but a
    cancellation by the worker's own shutdown, after which it is tried again."""
    store: RunStore = app.state.runs.store
    record = await store.get(run_id)
    if record is None or record["status"] in FINISHED:
        return
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=run_id, api_key_id=record["caller"])
    if record["status"] == "running":  # the worker of the previous attempt was lost
        lost = int(record["attempt"])
        log.warning("run taken over from a lost worker", attempt=lost)
        if lost >= executions:
            error = ApiError(
                500,
                "worker_lost",
                f"The worker executing this run stopped (attempt {lost} of {executions}).",
            )
            await _finish(app, record, lost, "failed", ("error", error.body()), error=error)
            return
    started = await store.transition(
        run_id,
        from_statuses=["queued", "running"],
        event=("started", {"attempt": attempt}),
        status="running",
        attempt=str(attempt),
        worker=worker_id,
        started_at=now(),
    )
    if not started:  # cancelled while queued
        return
    try:
        status, final = await _answer(app, store, run_id, attempt, record)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            current = await store.get(run_id)
            if current is not None and current.get("cancel_requested"):
                await _finish(app, record, attempt, "cancelled", ("cancelled", {}))
        raise
    await _finish(app, record, attempt, status, final)


async def _answer(
    app: FastAPI, store: RunStore, run_id: str, attempt: int, record: Mapping[str, str]
) -> tuple[str, tuple[str, Mapping[str, Any]]]:
    """Run the turn, its events appended as they come; the status and final event."""
    request = ChatRequest.model_validate_json(record["request"])
    try:
        events = await app.state.chat.stream(request, app.state.conversations, never_disconnected)
    except ApiError as error:
        return "failed", ("error", error.body())
    except Exception:
        log.exception("unhandled error")
        return "failed", ("error", internal_error().body())
    async with aclosing(events):
        async for event in events:
            if isinstance(event, ApiError):
                return "failed", ("error", event.body())
            if isinstance(event, ChatResponse):
                return event.status, ("done", event.model_dump(mode="json"))
            if isinstance(event, TextDelta):
                data = {"text": event.text, "source": event.source}
                kind = "delta"
            else:
                outcome = "error" if getattr(event, "is_error", False) else "ok"
                status = "started" if isinstance(event, ToolCallStarted) else outcome
                data = {"source": event.source, "name": event.name, "status": status}
                kind = "tool_call"
            if not await store.append(run_id, attempt, kind, data):
                break  # no longer this attempt's run: another took it over
    return "failed", ("error", internal_error().body())


async def _finish(
    app: FastAPI,
    record: Mapping[str, str],
    attempt: int,
    status: str,
    final: tuple[str, Mapping[str, Any]],
    error: ApiError | None = None,
) -> None:
    runs = app.state.runs
    run_id = record["id"]
    event_type, data = final
    fields = {"status": status, "finished_at": now()}
    if event_type == "done":
        fields["result"] = json.dumps(data)
    elif event_type == "error":
        fields["error"] = json.dumps(data["error"])
    finished = await runs.store.transition(
        run_id,
        from_statuses=["running", "queued"],
        at_attempt=attempt,
        event=final,
        **fields,
    )
    if not finished:
        return
    log.info("run finished", status=status, error_type=error.type if error else None)
    if record.get("session_id"):
        await runs.store.release_session(record["caller"], record["session_id"], run_id)
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
