"""The load benchmark (bench/) runs end to end in a tiny mode, so that its harness cannot rot,
and guards against a collapse of the service's speed.

The goals are proven by the recorded bench (docs/benchmarks.md), not here: this machine's
load moves every figure. Only a collapse fails: the service at under half the requests per
second of its floor, at every level, where a shared agent or a model client built for every
request lands. The naive shared agent (c) shows that the guard sees one.
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
# team of the same engine, the OpenAI facade against /v1/chat.
GUARDED = [
    ("plain", "a", "ad"),
    ("tool", "a", "ad"),
    ("plain", "af", "afd"),
    ("tool", "af", "afd"),
    ("team", "a", "d"),
    ("team", "af", "afd"),
    ("openai", "e", "a"),
]


def best_ratio(
    runs: dict[tuple[str, int, str], Any], scenario: str, server: str, floor: str
) -> float:
    """Requests per second of `server` over its floor's, at the level where it did best."""

    def rps(result: dict[str, Any]) -> float:
        return result["requests"] / result["seconds"]

    levels = {level for kind, level, _ in runs if kind == scenario}
    return max(
        rps(runs[scenario, level, server]) / rps(runs[scenario, level, floor]) for level in levels
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

    figures = json.loads(figures_file.read_text())
    runs = {
        (m["scenario"], m["concurrency"], m["server"]): m["result"] for m in figures["measurements"]
    }
    # Two levels: the lone agent's two scenarios on (a), (af), (b), (c), (ad), (afd); the
    # team's on (a), (b), (d), (af), (afd); the OpenAI facade (e) beside /v1/chat (a).
    assert len(runs) == 2 * (2 * 6 + 5 + 2)
    tool_servers = {server for scenario, _, server in runs if scenario == "tool"}
    assert tool_servers == {"a", "af", "b", "c", "ad", "afd"}
    assert {server for scenario, _, server in runs if scenario == "openai"} == {"a", "e"}
    team_servers = {server for scenario, _, server in runs if scenario == "team"}
    assert team_servers == {"a", "b", "d", "af", "afd"}
    for (scenario, level, server), result in runs.items():
        if server in ("a", "af", "ad", "afd", "b", "d", "e"):
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

    ratios = {guarded: best_ratio(runs, *guarded) for guarded in GUARDED}
    for (scenario, server, floor), ratio in ratios.items():
        print(f"{scenario}: ({server})/({floor}) {ratio:.2f} req/s at best")
    assert best_ratio(runs, "plain", "c", "b") < COLLAPSE  # a shared agent's history only grows
    assert all(ratio >= COLLAPSE for ratio in ratios.values()), ratios
