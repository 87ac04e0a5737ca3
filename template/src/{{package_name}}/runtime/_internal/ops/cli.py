"""The service's command: `serve`, and the deterministic model server for tests."""

import argparse
import importlib
import os
import sys

import uvicorn

from ..agent.fake_upstream import create_fake_upstream
from ..project import PACKAGE_NAME, PROJECT_SLUG
from ..settings import ConfigurationError


def worker_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"needs at least one worker, got {count}")
    return count


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
        "--reload", action="store_true", help="restart on code changes (development)"
    )
    fake = commands.add_parser(
        "fake-upstream", help="run the deterministic OpenAI-compatible stub server"
    )
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)

    if args.command == "fake-upstream":
        uvicorn.run(create_fake_upstream(faults=True), host=args.host, port=args.port)
        return 0
    try:
        # Building the app checks the whole configuration: fail here, with one message,
        # rather than with a traceback in every worker.
        importlib.import_module(f"{PACKAGE_NAME}.main")
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2
    uvicorn.run(
        f"{PACKAGE_NAME}.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        reload=args.reload,
        log_config=None,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
