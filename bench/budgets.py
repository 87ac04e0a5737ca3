"""What token budgets cost a turn: the lone agent rendered with Redis sessions, with and
without `budgets`, driven in alternating rounds of plain turns.

`uv run --group bench python -m bench.budgets`. Needs `redis-server` on the PATH. With budgets
every model call is reserved in Redis (one script) and settled in batches (one script every
`BUDGET_SETTLE_SECONDS` for all of a process's calls), every key has a budget far above what
the run spends, so nothing is refused.
"""

import argparse
import shutil
import socket
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from .load import LoadResult
from .run import Bench, _drive_measured, _free_port, _load_average, _process

SESSIONS = {"session_store": "redis"}
UNSPENDABLE = str(10**12)


class RedisBench(Bench):
    """The service of a render whose sessions, and budgets if any, live in `redis_url`."""

    def __init__(self, workdir: Path, answers: dict[str, str], redis_url: str) -> None:
        super().__init__(workdir, pinned=False, answer_overrides=answers)
        self.redis_url = redis_url

    def _service_env(self) -> dict[str, str]:
        prefix = self.answers["env_prefix"]
        env = {**super()._service_env(), f"{prefix}REDIS_URL": self.redis_url}
        if "budgets" in self.answer_overrides:
            env[f"{prefix}BUDGET_TOKENS_PER_DAY"] = UNSPENDABLE
        return env


def _start_redis(stack: ExitStack, workdir: Path) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on the PATH: the budgets live in Redis")
    port = _free_port()
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    log = workdir / "redis.log"
    process = stack.enter_context(_process(command, env={}, cwd=workdir, log=log, pinned=False))
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"redis://127.0.0.1:{port}/0"
        except OSError as error:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{log.read_text()}") from error
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.budgets", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=600, help="per round and service")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="budgets-bench-") as workdir, ExitStack() as stack:
        root = Path(workdir)
        redis_url = _start_redis(stack, root)
        benches = {
            "off": RedisBench(root / "off", SESSIONS, redis_url),
            "on": RedisBench(root / "on", {**SESSIONS, "budgets": "true"}, redis_url),
        }
        for bench in benches.values():
            bench.workdir.mkdir()
            bench.render_and_install()
        benches["off"].start_upstream(stack)
        benches["on"].upstream_url = benches["off"].upstream_url
        servers = {name: stack.enter_context(bench.server("a")) for name, bench in benches.items()}
        for url, pid in servers.values():
            _drive_measured(url, pid, "plain", 8, args.warmup)
        rps: dict[str, list[float]] = {"off": [], "on": []}
        cpu_ms: dict[str, list[float]] = {"off": [], "on": []}
        for round_number in range(args.rounds):
            # Alternating which goes first evens out what the machine's other load does.
            for name in ("off", "on") if round_number % 2 == 0 else ("on", "off"):
                url, pid = servers[name]
                run, cpu = _drive_measured(url, pid, "plain", args.concurrency, args.requests)
                result = LoadResult.of([run])
                if result.errors:
                    raise SystemExit(f"budgets {name}: {result.errors} requests failed")
                rps[name].append(result.rps)
                cpu_ms[name].append(cpu / result.requests * 1000)
                print(
                    f"budgets {name}: {result.rps:.1f} req/s, p50 {result.p50_ms:.0f} ms, "
                    f"p99 {result.p99_ms:.0f} ms, server CPU {cpu_ms[name][-1]:.2f} ms/request",
                    flush=True,
                )
    median_rps = {name: statistics.median(values) for name, values in rps.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu_ms.items()}
    print(
        f"plain turns at concurrency {args.concurrency}, medians of {args.rounds} rounds: "
        f"req/s on/off {median_rps['on'] / median_rps['off']:.3f} "
        f"({median_rps['on']:.1f} / {median_rps['off']:.1f}); server CPU per request "
        f"{median_cpu['on']:.2f} ms with budgets, {median_cpu['off']:.2f} ms without; "
        f"load average {_load_average():.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
