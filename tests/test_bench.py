"""The load benchmark (bench/) runs end to end in a tiny mode, so that its harness cannot rot,
and guards against a collapse of the service's speed.

The goals are proven by the recorded bench (docs/benchmarks.md), not here: this machine's
load moves every figure. Only a collapse fails: the service spending over twice its floor's
server CPU per request, at every level, where a shared agent or a model client built for
every request lands. The naive shared agent (c) shows that the guard sees one.
"""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from rendering import TEMPLATE

TINY = "--levels 1,4 --requests 50 --rounds 2 --warmup 10 --naive-requests 20 --rss-requests 50"
COLLAPSE = 0.5
# (scenario, server, its floor): each engine's service against a bare request-scoped agent or
# team of the same engine, the OpenAI facade against /v1/chat of the same engine.
GUARDED = [
    ("plain", "a", "ad"),
    ("tool", "a", "ad"),
    ("plain", "af", "afd"),
    ("tool", "af", "afd"),
    ("team", "a", "d"),
    ("team", "af", "afd"),
    ("openai", "e", "a"),
    ("openai", "afe", "af"),
]


def best_ratio(
    measured: dict[tuple[str, int, str], Any], scenario: str, server: str, floor: str
) -> float:
    """The floor's server CPU per request over `server`'s, at the level where it was best.

    CPU time, not requests per second: it does not count the time a server waited for a CPU,
    which a busy machine (the rest of this suite) hands out unevenly over a tiny run.
    """
    levels = {level for kind, level, _ in measured if kind == scenario}
    return max(
        measured[scenario, level, floor]["server_cpu_ms"]
        / measured[scenario, level, server]["server_cpu_ms"]
        for level in levels
    )


def test_the_benchmark_prints_its_tables_with_clean_runs_for_both_engines_and_the_floor(
    tmp_path: Path,
) -> None:
    figures_file = tmp_path / "figures.json"
    command = ["uv", "run", "--frozen", "--group", "bench", "python", "-m", "bench"]
    command += [*TINY.split(), "--json", str(figures_file)]
    run = subprocess.run(
        command,
        cwd=TEMPLATE,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| scenario | concurrency | req/s (a)/(b) |" in run.stdout
    assert "| Agent Framework: scenario | concurrency | req/s (af)/(b) |" in run.stdout
    assert "| req/s (a)/(ad) | CPU (ad)/(a) |" in run.stdout
    assert "| req/s (af)/(afd) | CPU (afd)/(af) |" in run.stdout
    assert "Building one request-scoped agent:" in run.stdout
    assert "| team: concurrency | req/s (a)/(d) |" in run.stdout
    assert "| req/s (af)/(afd) | p99 (af)/(afd) | CPU (afd)/(af) |" in run.stdout
    assert "| OpenAI facade: concurrency | req/s (e)/(a) |" in run.stdout
    assert "| req/s (afe)/(af) | p50 (afe)/(af) | CPU (af)/(afe) |" in run.stdout

    figures = json.loads(figures_file.read_text())
    measured = {(m["scenario"], m["concurrency"], m["server"]): m for m in figures["measurements"]}
    runs = {key: m["result"] for key, m in measured.items()}
    # Two levels: the lone agent's two scenarios on (a), (af), (b), (c), (ad), (afd); the
    # team's on (a), (b), (d), (af), (afd); the OpenAI facade, (e) and (afe), beside /v1/chat,
    # (a) and (af).
    assert len(runs) == 2 * (2 * 6 + 5 + 4)
    tool_servers = {server for scenario, _, server in runs if scenario == "tool"}
    assert tool_servers == {"a", "af", "b", "c", "ad", "afd"}
    facade_servers = {server for scenario, _, server in runs if scenario == "openai"}
    assert facade_servers == {"a", "e", "af", "afe"}
    team_servers = {server for scenario, _, server in runs if scenario == "team"}
    assert team_servers == {"a", "b", "d", "af", "afd"}
    for (scenario, level, server), result in runs.items():
        if server in ("a", "af", "ad", "afd", "b", "d", "e", "afe"):
            assert (result["errors"], result["cross_talk"]) == (0, 0), (scenario, level, server)
            assert result["requests"] == 50
        if server == "c" and scenario == "plain":
            # Every turn after the first reaches the model with the earlier turns' canaries.
            assert result["cross_talk"] > 0, (scenario, level)
    assert figures["rss_after_mb"] > 0
    assert figures["af_rss_after_mb"] > 0
    assert figures["agent_build_us"] > 0
    assert figures["af_agent_build_us"] > 0
    assert figures["team_build_us"] > figures["agent_build_us"]

    ratios = {guarded: best_ratio(measured, *guarded) for guarded in GUARDED}
    for (scenario, server, floor), ratio in ratios.items():
        print(f"{scenario}: CPU ({floor})/({server}) {ratio:.2f} at best")
    assert best_ratio(measured, "plain", "c", "b") < COLLAPSE  # a shared agent's history only grows
    assert all(ratio >= COLLAPSE for ratio in ratios.values()), ratios
