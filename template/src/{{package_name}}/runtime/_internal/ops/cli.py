"""The service's command: `serve`, `dev`, `worker`, `doctor`, `eval`, and the deterministic
model server."""

import argparse
import importlib
import math
import os
import sys
from pathlib import Path

import uvicorn

from ..agent.fake_upstream import create_fake_upstream
from ..project import ENV_PREFIX, FEATURES, PACKAGE_NAME, PROJECT_SLUG
from ..settings import ConfigurationError
from . import doctor, evals

# Of uvicorn's two HTTP parsers only h11 limits the size of a request's headers (httptools
# takes megabytes of them); 16 KiB holds a bearer key and any gateway's forwarding headers.
MAX_HEADER_BYTES = 16 * 1024
# Time to send the last answers once every turn has reached its deadline.
SHUTDOWN_MARGIN_SECONDS = 5
WORKER_HEALTHCHECK_SECONDS = 30


def worker_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"needs at least one worker, got {count}")
    return count


def whole_seconds(text: str) -> int:
    seconds = int(text)
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"needs at least one second, got {seconds}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROJECT_SLUG)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=worker_count,
        # The variable uvicorn's and gunicorn's own commands read, so platforms that set it work.
        default=os.environ.get("WEB_CONCURRENCY", "1"),
        help="worker processes (default: $WEB_CONCURRENCY, else 1)",
    )
    serve.add_argument(
        "--timeout-keep-alive",
        type=whole_seconds,
        default=5,
        help="seconds an idle connection is kept open between requests (default: 5); behind a "
        "load balancer that reuses connections, set it above the balancer's idle timeout",
    )
    serve.add_argument(
        "--reload", action="store_true", help="restart on code changes (development)"
    )
    dev = commands.add_parser(
        "dev",
        help=f"run the service for development: {ENV_PREFIX}ENVIRONMENT=development (the "
        "playground, no API keys needed) and a restart on code changes",
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(workers=1, reload=True, timeout_keep_alive=5)
    doctor_command = commands.add_parser(
        "doctor",
        help="check this environment: settings, model server, Redis, token counter (one line "
        "each; exit 1 if any fails)",
    )
    doctor_command.add_argument(
        "--write-settings-reference",
        action="store_true",
        help="write the table of every setting into docs/configuration.md instead, checking "
        "nothing (after adding or changing a setting)",
    )
    if "runs" in FEATURES:
        worker = commands.add_parser("worker", help="execute queued runs (until SIGTERM)")
        worker.add_argument(
            "--app",
            default=f"{PACKAGE_NAME}.main:app",
            metavar="MODULE:NAME",
            help="the app whose agents execute the runs, or a function making it "
            "(default: %(default)s)",
        )
    evals.add_arguments(
        commands.add_parser(
            "eval",
            help="run evaluation cases (JSON Lines) against the service, its model calls "
            "replayed from recordings (--record to make them)",
        )
    )
    fake = commands.add_parser(
        "fake-upstream", help="run the deterministic OpenAI-compatible stub server"
    )
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)

    if args.command == "doctor":
        if args.write_settings_reference:
            return doctor.write_settings_reference()
        return doctor.run()
    if args.command == "worker":
        runs = importlib.import_module(f"{__package__.rpartition('.')[0]}.features.runs.worker")
        return runs.run_worker(args.app)
    if args.command == "eval":
        return evals.run(args)
    if args.command == "fake-upstream":
        uvicorn.run(create_fake_upstream(faults=True), host=args.host, port=args.port)
        return 0
    if args.command == "dev":
        # Set in the environment, so that the processes the reloader starts inherit it.
        os.environ[f"{ENV_PREFIX}ENVIRONMENT"] = "development"
        print(development_banner(args.host, args.port), file=sys.stderr)
    try:
        # Building the app checks the whole configuration: fail here, with one message,
        # rather than with a traceback in every worker.
        package = importlib.import_module(PACKAGE_NAME)
        importlib.import_module(f"{PACKAGE_NAME}.main")
        settings = importlib.import_module(f"{PACKAGE_NAME}.settings").Settings.load()
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2
    # On SIGTERM every turn in flight may run to its deadline; a connection still open after
    # that (a client that never finishes sending its body) is cut, so that the lifespan's
    # clean-up runs before the platform kills the process.
    shutdown_seconds = math.ceil(settings.request_deadline_seconds) + SHUTDOWN_MARGIN_SECONDS
    uvicorn.run(
        f"{PACKAGE_NAME}.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        reload=args.reload,
        # The package's own code, not the working directory with its virtual environment.
        reload_dirs=[str(Path(package.__file__).parent)] if args.reload else None,
        log_config=None,
        access_log=False,
        http="h11",
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=args.timeout_keep_alive,
        # The supervisor kills a worker that does not answer its ping within this many
        # seconds. Uvicorn's 5 s is shorter than a worker importing its engine on a busy
        # machine takes, which killed and restarted the workers over and over.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        timeout_graceful_shutdown=shutdown_seconds,
    )
    return 0


def development_banner(host: str, port: int) -> str:
    address = f"http://{host}:{port}"
    pages = [f"the API docs at {address}/docs"]
    if "playground" in FEATURES:
        pages.insert(0, f"the playground at {address}/playground")
    return f"development mode ({ENV_PREFIX}ENVIRONMENT=development): " + ", ".join(pages)


if __name__ == "__main__":
    sys.exit(main())
