"""The benchmark run: render, install, start the servers, drive load, print the tables."""

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import copier
import psutil
import yaml

from .load import LoadResult, LoadRun, Scenario, drive

BENCH = Path(__file__).resolve().parent
TEMPLATE = BENCH.parent
API_KEY = "bench-key"
SERVERS = {
    "a": "rendered service",
    "af": "rendered service, engine=agent_framework",
    "b": "bare passthrough",
    "c": "naive shared agent",
    "d": "bare request-scoped team",
    "ad": "bare request-scoped agent, AutoGen",
    "afd": "bare request-scoped agent, or team, Agent Framework",
    "e": "rendered service, /v1/chat/completions",
    "afe": "rendered service, engine=agent_framework, /v1/chat/completions",
}
# The scenarios of the lone agent, measured on (a), (af), (b) and (c); the team scenario is
# measured on a service rendered with a team, (a), against (b) and (d) of the same shape.
AGENT_SCENARIOS: tuple[Scenario, ...] = ("plain", "tool")
# The lone agent's servers that take turns: the service on each engine, the floor, and a
# bare request-scoped agent of each engine, that engine's own floor.
AGENT_SERVERS = ("a", "af", "b", "ad", "afd")
# The team's: the service and a bare request-scoped team on each engine, and the floor.
TEAM_SERVERS = ("a", "b", "d", "af", "afd")
# With two CPUs or more the server under test gets one to itself; the stub and the load
# generator share another.
SERVER_CPU = 0
CLIENT_CPU = 1


@dataclass(frozen=True)
class Measurement:
    scenario: Scenario
    concurrency: int
    server: str
    result: LoadResult
    server_cpu_ms: float  # CPU time the server spent per request: steadier than req/s
    load_average: float


@contextmanager
def _process(
    command: list[str], *, env: dict[str, str], cwd: Path, log: Path, pinned: bool
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=output)
    if pinned:
        os.sched_setaffinity(process.pid, {SERVER_CPU})
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _environment() -> dict[str, str]:
    """This process's environment, less the virtual environment it runs in."""
    return {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{process.args} did not answer within 120 s:\n{log.read_text()[-3000:]}")


class Bench:
    """The render, its environment, and how to start each server in it."""

    def __init__(
        self,
        workdir: Path,
        pinned: bool,
        answer_overrides: dict[str, str],
        *,
        team: bool = False,
        engine: str = "autogen",
    ) -> None:
        self.workdir = workdir
        self.team = team
        self.engine = engine
        self.pinned = pinned
        self.answer_overrides = answer_overrides
        self.service = workdir / "service"
        self.python = str(self.service / ".venv" / "bin" / "python")
        self.upstream_url = ""
        self.answers: dict[str, Any] = {}

    def render_and_install(self) -> None:
        answers = {
            **self.answer_overrides,
            "engine": self.engine,
            "agent_team": "round_robin" if self.team else "single",
        }
        copier.run_copy(
            str(TEMPLATE),
            self.service,
            data=answers,
            defaults=True,
            unsafe=True,
            vcs_ref="HEAD",
            quiet=True,
        )
        self.answers = yaml.safe_load((self.service / ".copier-answers.yml").read_text())
        if self.team:
            package = self.service / "src" / self.answers["package_name"]
            (package / "team.py").write_text((BENCH / "team.py").read_text())
        env = {**_environment(), "UV_PYTHON_DOWNLOADS": "never"}
        subprocess.run(
            ["uv", "sync", "--frozen", "--no-dev", "--quiet"], cwd=self.service, env=env, check=True
        )

    def start_upstream(self, stack: ExitStack) -> None:
        port = _free_port()
        log = self.workdir / "upstream.log"
        command = [sys.executable, str(BENCH / "upstream_stub.py"), "--port", str(port)]
        process = stack.enter_context(
            _process(command, env=dict(os.environ), cwd=BENCH, log=log, pinned=False)
        )
        self.upstream_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the upstream stub did not start:\n{log.read_text()}"
                    ) from error
                time.sleep(0.05)

    @contextmanager
    def server(self, name: str) -> Iterator[tuple[str, int]]:
        """Start server `name` (see SERVERS); yield its chat URL and process id."""
        port = _free_port()
        if name == "a":
            env = self._service_env()
            # The service's console script, which names wherever its CLI module lives.
            script = self.service / ".venv" / "bin" / self.answers["project_slug"]
            command = [str(script), "serve", "--port", str(port)]
            cwd = self.service
        else:
            env = {
                **_environment(),
                "BENCH_UPSTREAM_URL": self.upstream_url,
                # As the service sets it: each floor is its engine at its cheapest.
                "AUTOGEN_DISABLE_RUNTIME_TRACING": "true",
            }
            app = {
                "b": "passthrough:team_app" if self.team else "passthrough:app",
                "c": "naive:app",
                "d": "bare_team:app",
                "ad": "bare_autogen:app",
                "afd": "bare_agent_framework:team_app" if self.team else "bare_agent_framework:app",
            }[name]
            command = [self.python, "-m", "uvicorn", app, "--port", str(port)]
            command += ["--no-access-log", "--log-level", "warning"]
            cwd = BENCH
        log = self.workdir / f"server-{name}.log"
        with _process(command, env=env, cwd=cwd, log=log, pinned=self.pinned) as process:
            _wait_until_up(port, process, log)
            yield f"http://127.0.0.1:{port}/v1/chat", process.pid

    def _service_env(self) -> dict[str, str]:
        prefix = self.answers["env_prefix"]
        return {
            **_environment(),
            f"{prefix}MODEL_PROVIDER": "openai",
            f"{prefix}MODEL_BASE_URL": self.upstream_url,
            f"{prefix}MODEL_API_KEY": "bench",
            f"{prefix}API_KEYS": json.dumps([API_KEY]),
        }

    def build_microseconds(self) -> float:
        """What building the request-scoped agent, or team, of one turn costs."""
        served = "team:TEAM" if self.team else "agent:AGENT"
        command = [self.python, str(BENCH / "agent_build.py"), self.answers["package_name"]]
        command += [served, self.engine]
        built = subprocess.run(
            command, env=self._service_env(), cwd=self.service, capture_output=True, text=True
        )
        if built.returncode != 0:
            raise RuntimeError(f"timing the agent build failed:\n{built.stderr}")
        return float(built.stdout)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _load_average() -> float:
    return os.getloadavg()[0]


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].partition(":")[2].strip() if names else cpu
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def _drive_measured(
    url: str, pid: int, scenario: Scenario, concurrency: int, requests: int
) -> tuple[LoadRun, float]:
    """Drive load at `url`; also return the CPU seconds its server process spent meanwhile."""
    server = psutil.Process(pid)
    before = _cpu_seconds(server)
    run = asyncio.run(drive(url, API_KEY, scenario, concurrency, requests))
    return run, _cpu_seconds(server) - before


def measure(
    args: argparse.Namespace,
    bench: Bench,
    af_bench: Bench,
    team_bench: Bench,
    af_team_bench: Bench,
) -> dict[str, Any]:
    measurements: list[Measurement] = []
    per_round = max(args.requests // args.rounds, 1)
    with ExitStack() as stack:
        bench.start_upstream(stack)
        af_bench.upstream_url = bench.upstream_url
        # (af) is the service as (a) is, from the render on the other engine.
        started = {
            "a": bench.server("a"),
            "af": af_bench.server("a"),
            "b": bench.server("b"),
            "ad": bench.server("ad"),
            "afd": af_bench.server("afd"),
        }
        shared = {name: stack.enter_context(started[name]) for name in AGENT_SERVERS}
        for url, _ in shared.values():
            for scenario in AGENT_SCENARIOS:
                asyncio.run(drive(url, API_KEY, scenario, 8, args.warmup))
        for scenario in AGENT_SCENARIOS:
            for level in args.levels:
                # (a), (af) and (b) take turns in rounds, so that all see the same moments
                # of whatever else the machine is doing.
                runs, cpu_seconds = _rounds(args, shared, scenario, level, per_round)
                # The naive server starts afresh for every level, and runs fewer turns: its
                # shared history only grows, and every turn sends all of it.
                with bench.server("c") as (url, pid):
                    run, cpu_seconds["c"] = _drive_measured(
                        url, pid, scenario, level, args.naive_requests
                    )
                    runs["c"] = [run]
                measurements += _measured(scenario, level, runs, cpu_seconds)
        # The OpenAI facade against /v1/chat, on the same process, on each engine, taking turns.
        facade = {}
        for chat, completions in (("a", "e"), ("af", "afe")):
            url, pid = shared[chat]
            facade |= {chat: (url, pid), completions: (url + "/completions", pid)}
            asyncio.run(drive(url + "/completions", API_KEY, "openai", 8, args.warmup))
        for level in args.levels:
            runs, cpu_seconds = _rounds(args, facade, "openai", level, per_round)
            measurements += _measured("openai", level, runs, cpu_seconds)
        rss = {name: _rss_growth(args, *shared[name]) for name in ("a", "af")}
    with ExitStack() as stack:
        team_bench.start_upstream(stack)
        af_team_bench.upstream_url = team_bench.upstream_url
        started = {name: team_bench.server(name) for name in ("a", "b", "d")}
        started |= {"af": af_team_bench.server("a"), "afd": af_team_bench.server("afd")}
        servers = {name: stack.enter_context(started[name]) for name in TEAM_SERVERS}
        for url, _ in servers.values():
            asyncio.run(drive(url, API_KEY, "team", 8, args.warmup))
        for level in args.levels:
            runs, cpu_seconds = _rounds(args, servers, "team", level, per_round)
            measurements += _measured("team", level, runs, cpu_seconds)
    return {
        "measurements": measurements,
        "rss_requests": args.rss_requests // 2 * 2,
        "rss_before_mb": rss["a"][0],
        "rss_after_mb": rss["a"][1],
        "af_rss_before_mb": rss["af"][0],
        "af_rss_after_mb": rss["af"][1],
        "agent_build_us": bench.build_microseconds(),
        "af_agent_build_us": af_bench.build_microseconds(),
        "team_build_us": team_bench.build_microseconds(),
    }


def _rss_growth(args: argparse.Namespace, url: str, pid: int) -> tuple[float, float]:
    """The server's resident memory in MB before and after `args.rss_requests` more turns."""
    server = psutil.Process(pid)
    before = server.memory_info().rss
    for scenario in AGENT_SCENARIOS:
        asyncio.run(drive(url, API_KEY, scenario, 32, args.rss_requests // 2))
    return before / 2**20, server.memory_info().rss / 2**20


def _rounds(
    args: argparse.Namespace,
    servers: dict[str, tuple[str, int]],
    scenario: Scenario,
    level: int,
    per_round: int,
) -> tuple[dict[str, list[LoadRun]], dict[str, float]]:
    """Each server in turn, `args.rounds` times, so that all see the same moments of
    whatever else the machine is doing."""
    runs: dict[str, list[LoadRun]] = {name: [] for name in servers}
    cpu_seconds = dict.fromkeys(servers, 0.0)
    for _ in range(args.rounds):
        for name, (url, pid) in servers.items():
            run, cpu = _drive_measured(url, pid, scenario, level, per_round)
            runs[name].append(run)
            cpu_seconds[name] += cpu
    return runs, cpu_seconds


def _measured(
    scenario: Scenario,
    level: int,
    runs: dict[str, list[LoadRun]],
    cpu_seconds: dict[str, float],
) -> list[Measurement]:
    measurements = []
    for name in runs:
        result = LoadResult.of(runs[name])
        cpu_ms = cpu_seconds[name] / result.requests * 1000
        measurements.append(Measurement(scenario, level, name, result, cpu_ms, _load_average()))
        print(_row(measurements[-1]), flush=True)
    return measurements


HEADER = (
    "| scenario | concurrency | server | requests | req/s | p50 ms | p99 ms | errors "
    "| cross-talk | server CPU ms/request | load average |\n"
    "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def _row(m: Measurement) -> str:
    r = m.result
    return (
        f"| {m.scenario} | {m.concurrency} | ({m.server}) {SERVERS[m.server]} | {r.requests} "
        f"| {r.rps:.0f} "
        f"| {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | {r.cross_talk} "
        f"| {m.server_cpu_ms:.2f} | {m.load_average:.1f} |"
    )


def report(figures: dict[str, Any]) -> str:
    measurements: list[Measurement] = figures["measurements"]
    by_key = {(m.scenario, m.concurrency, m.server): m for m in measurements}
    lines = ["", HEADER, *(_row(m) for m in measurements), ""]
    lines += [
        "| scenario | concurrency | req/s (a)/(b) | p50 (a)/(b) | p99 (a)/(b) | CPU (b)/(a) "
        "| req/s (a)/(ad) | CPU (ad)/(a) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    agent_rows = [m for m in measurements if m.scenario != "openai"]
    for scenario, level in dict.fromkeys((m.scenario, m.concurrency) for m in agent_rows):
        a, b = by_key[scenario, level, "a"], by_key[scenario, level, "b"]
        line = (
            f"| {scenario} | {level} | {a.result.rps / b.result.rps:.2f} "
            f"| {a.result.p50_ms / b.result.p50_ms:.2f} | {a.result.p99_ms / b.result.p99_ms:.2f} "
            f"| {b.server_cpu_ms / a.server_cpu_ms:.2f} "
        )
        if (ad := by_key.get((scenario, level, "ad"))) is None:  # the team has (d) instead
            lines.append(line + "| | |")
        else:
            lines.append(
                line + f"| {a.result.rps / ad.result.rps:.2f} "
                f"| {ad.server_cpu_ms / a.server_cpu_ms:.2f} |"
            )
    lines += [
        "",
        "| Agent Framework: scenario | concurrency | req/s (af)/(b) | p50 (af)/(b) "
        "| p99 (af)/(b) | CPU (b)/(af) | req/s (af)/(afd) | CPU (afd)/(af) | req/s (af)/(a) "
        "| CPU ms/request (a) / (af) / (afd) / (b) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario, level in dict.fromkeys(
        (m.scenario, m.concurrency)
        for m in measurements
        if m.server == "af" and m.scenario in AGENT_SCENARIOS
    ):
        a, af, b, _, afd = (by_key[scenario, level, name] for name in AGENT_SERVERS)
        lines.append(
            f"| {scenario} | {level} | {af.result.rps / b.result.rps:.2f} "
            f"| {af.result.p50_ms / b.result.p50_ms:.2f} "
            f"| {af.result.p99_ms / b.result.p99_ms:.2f} "
            f"| {b.server_cpu_ms / af.server_cpu_ms:.2f} "
            f"| {af.result.rps / afd.result.rps:.2f} | {afd.server_cpu_ms / af.server_cpu_ms:.2f} "
            f"| {af.result.rps / a.result.rps:.2f} | {a.server_cpu_ms:.2f} "
            f"/ {af.server_cpu_ms:.2f} / {afd.server_cpu_ms:.2f} / {b.server_cpu_ms:.2f} |"
        )
    lines += [
        "",
        "| team: concurrency | req/s (a)/(d) | p50 (a)/(d) | p99 (a)/(d) | CPU (d)/(a) "
        "| req/s (af)/(afd) | p99 (af)/(afd) | CPU (afd)/(af) | req/s (af)/(a) "
        "| CPU ms/request (a) / (d) / (af) / (afd) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in dict.fromkeys(m.concurrency for m in measurements if m.scenario == "team"):
        a, _, d, af, afd = (by_key["team", level, name] for name in TEAM_SERVERS)
        lines.append(
            f"| {level} | {a.result.rps / d.result.rps:.2f} "
            f"| {a.result.p50_ms / d.result.p50_ms:.2f} | {a.result.p99_ms / d.result.p99_ms:.2f} "
            f"| {d.server_cpu_ms / a.server_cpu_ms:.2f} | {af.result.rps / afd.result.rps:.2f} "
            f"| {af.result.p99_ms / afd.result.p99_ms:.2f} "
            f"| {afd.server_cpu_ms / af.server_cpu_ms:.2f} | {af.result.rps / a.result.rps:.2f} "
            f"| {a.server_cpu_ms:.2f} / {d.server_cpu_ms:.2f} / {af.server_cpu_ms:.2f} "
            f"/ {afd.server_cpu_ms:.2f} |"
        )
    lines += [
        "",
        "| OpenAI facade: concurrency | req/s (e)/(a) | p50 (e)/(a) | CPU (a)/(e) "
        "| req/s (afe)/(af) | p50 (afe)/(af) | CPU (af)/(afe) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in dict.fromkeys(m.concurrency for m in measurements if m.scenario == "openai"):
        line = f"| {level} "
        for chat, completions in (("a", "e"), ("af", "afe")):
            a, e = by_key["openai", level, chat], by_key["openai", level, completions]
            line += (
                f"| {e.result.rps / a.result.rps:.2f} | {e.result.p50_ms / a.result.p50_ms:.2f} "
                f"| {a.server_cpu_ms / e.server_cpu_ms:.2f} "
            )
        lines.append(line + "|")
    lines.append("")
    for server, prefix in (("a", ""), ("af", "af_")):
        before, after = figures[f"{prefix}rss_before_mb"], figures[f"{prefix}rss_after_mb"]
        lines.append(
            f"RSS of ({server}) over {figures['rss_requests']} more requests at concurrency 32 "
            f"(half plain, half tool): {before:.1f} MB -> {after:.1f} MB ({after - before:+.1f} MB)"
        )
    lines += [
        f"Building one request-scoped agent: {figures['agent_build_us']:.0f} us",
        f"Building one request-scoped agent on Agent Framework: "
        f"{figures['af_agent_build_us']:.0f} us",
        f"Building one request-scoped two-agent team: {figures['team_build_us']:.0f} us",
    ]
    return "\n".join(lines)


def _answer(text: str) -> tuple[str, str]:
    question, separator, value = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"{text!r} is not QUESTION=VALUE")
    return question, value


def _levels(text: str) -> list[int]:
    return [int(level) for level in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="The rendered service, on each engine, against a bare passthrough and a "
        "naive shared agent, and a team service against a passthrough and a bare team of the "
        "same shape.",
    )
    parser.add_argument("--levels", type=_levels, default=[1, 8, 32, 64], help="concurrencies")
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per server, scenario and level"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="turns (a), (af) and (b) take at each level, each with its share of the requests",
    )
    parser.add_argument(
        "--naive-requests",
        type=int,
        default=200,
        help="requests per scenario and level for (c), whose every turn costs more than the last",
    )
    parser.add_argument(
        "--warmup", type=int, default=200, help="unmeasured requests per server and scenario"
    )
    parser.add_argument(
        "--rss-requests", type=int, default=5000, help="requests between the two RSS readings"
    )
    parser.add_argument(
        "--answer",
        type=_answer,
        action="append",
        default=[],
        metavar="QUESTION=VALUE",
        help="render with this answer instead of the default (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)

    pinned = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    if pinned:
        os.sched_setaffinity(0, {CLIENT_CPU})
    machine = _machine()
    print(
        f"machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gb']} GB, "
        f"{machine['system']}, Python {machine['python']}; "
        + (
            f"servers pinned to CPU {SERVER_CPU}, stub and load generator to CPU {CLIENT_CPU}"
            if pinned
            else "no CPU pinning"
        ),
        flush=True,
    )
    print(f"answers other than the defaults: {dict(args.answer) or 'none'}", flush=True)
    print(f"load average at start: {_load_average():.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="autogen-bench-") as workdir:
        answers = dict(args.answer)
        bench = Bench(Path(workdir) / "agent", pinned, answers)
        af_bench = Bench(
            Path(workdir) / "agent_framework", pinned, answers, engine="agent_framework"
        )
        team_bench = Bench(Path(workdir) / "team", pinned, answers, team=True)
        af_team_bench = Bench(
            Path(workdir) / "agent_framework_team",
            pinned,
            answers,
            team=True,
            engine="agent_framework",
        )
        benches = (bench, af_bench, team_bench, af_team_bench)
        for each in benches:
            each.workdir.mkdir()
            each.render_and_install()
        print(HEADER, flush=True)
        figures = measure(args, *benches)
    print(report(figures))
    print(f"load average at end: {_load_average():.2f}")
    if args.json:
        figures["measurements"] = [asdict(m) for m in figures["measurements"]]
        args.json.write_text(
            json.dumps({"machine": machine, "answers": dict(args.answer), **figures}, indent=2)
        )
    return 0
