"""The load benchmark (bench/) runs end to end in a tiny mode, so that its harness cannot rot.

Speed is not asserted: this machine's load says nothing about the service.
"""

import json
import os
import subprocess
from pathlib import Path

from rendering import TEMPLATE

TINY = "--levels 1,4 --requests 50 --rounds 2 --warmup 10 --naive-requests 20 --rss-requests 50"


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
    assert "Building one request-scoped agent:" in run.stdout
    assert "| team: concurrency | req/s (a)/(d) |" in run.stdout
    assert "| OpenAI facade: concurrency | req/s (e)/(a) |" in run.stdout

    figures = json.loads(figures_file.read_text())
    runs = {
        (m["scenario"], m["concurrency"], m["server"]): m["result"] for m in figures["measurements"]
    }
    # Two levels: the lone agent's two scenarios on (a), (af), (b), (c); the team's on (a), (b),
    # (d); the OpenAI facade (e) beside /v1/chat (a).
    assert len(runs) == 2 * (2 * 4 + 3 + 2)
    assert {server for scenario, _, server in runs if scenario == "tool"} == {"a", "af", "b", "c"}
    assert {server for scenario, _, server in runs if scenario == "openai"} == {"a", "e"}
    assert {server for scenario, _, server in runs if scenario == "team"} == {"a", "b", "d"}
    for (scenario, level, server), result in runs.items():
        if server in ("a", "af", "b", "d", "e"):
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
