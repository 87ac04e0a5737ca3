"""The AG-UI endpoint of a rendered service, driven by the official JavaScript client,
`@ag-ui/client`'s `HttpAgent`, from the npm registry, under Node: a plain run, a run that
waits for an approval resumed by the next, and a frontend tool's round trip. The client
checks the event stream against the protocol as it reads it, and fails the run on a
violation; each stream it saw is then checked by a conformance validator from PyPI,
`ag-ui-validate`, whose rules are stricter.

The service has the default answers and Redis sessions: an approval goes on from the
session that kept the paused turn.
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ag_ui_validate.pytest_plugin import validate_agui
from rendering import render

HERE = Path(__file__).parent / "ag_ui_client"
CLIENT_PACKAGE = "@ag-ui/client@1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def required(command: str) -> str:
    found = shutil.which(command)
    if found is None:
        pytest.fail(f"{command} is not installed: the AG-UI client test needs it (apt-get install)")
    return found


@pytest.fixture(scope="session")
def client_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with `@ag-ui/client` installed from npm, once per test session."""
    required("node")
    directory = tmp_path_factory.mktemp("ag-ui-client")
    (directory / "package.json").write_text('{"private": true, "type": "module"}\n')
    subprocess.run(
        [required("npm"), "install", "--no-audit", "--no-fund", "--silent", CLIENT_PACKAGE],
        cwd=directory,
        check=True,
        timeout=600,
    )
    shutil.copy(HERE / "driver.mjs", directory)
    return directory


@pytest.fixture
def service_url(tmp_path: Path) -> Iterator[str]:
    """The default render with sessions, serving an agent with a tool that needs approval."""
    path = render(tmp_path / "service", {"session_store": "redis"})
    shutil.copy(HERE / "serve_ag_ui.py", path)
    redis_port, port = free_port(), free_port()
    redis_options = ["--bind", "127.0.0.1", "--port", str(redis_port), "--save", ""]
    env = {
        **os.environ,
        "UV_PYTHON_DOWNLOADS": "never",
        "SUPPORT_DESK_ENVIRONMENT": "development",
        "SUPPORT_DESK_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }
    env.pop("VIRTUAL_ENV", None)
    command = ["uv", "run", "--frozen", "python", "serve_ag_ui.py", str(port)]
    log = tmp_path / "service.log"
    with (
        log.open("w") as log_file,
        subprocess.Popen(
            [required("redis-server"), *redis_options], cwd=tmp_path, stdout=subprocess.DEVNULL
        ) as redis_server,
        subprocess.Popen(
            command, cwd=path, env=env, stdout=log_file, stderr=subprocess.STDOUT
        ) as service,
    ):
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 300  # the first `uv run` installs the environment
            while True:
                try:
                    with urllib.request.urlopen(f"{base_url}/readyz", timeout=5):
                        break  # 200: a 503 raises
                except (urllib.error.URLError, ConnectionError):
                    pass
                if service.poll() is not None or time.monotonic() > deadline:
                    service.kill()
                    pytest.fail(f"the service did not start:\n{log.read_text()[-4000:]}")
                time.sleep(0.2)
            yield f"{base_url}/ag-ui"
        finally:
            service.terminate()
            redis_server.terminate()


def drive(client_dir: Path, url: str) -> dict[str, Any]:
    finished = subprocess.run(
        ["node", "driver.mjs", url, uuid.uuid4().hex],
        cwd=client_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def assert_conformant(events: list[dict[str, Any]]) -> None:
    """No error or warning from the validator; its notes (`info`) are allowed."""
    report = validate_agui(events)
    findings = [d for d in report.diagnostics if d.severity != "info"]
    assert not findings, "\n".join(f"{d.rule} {d.message} (event {d.event_index})" for d in findings)


def test_the_official_client_runs_the_agent_and_resumes_an_approval(
    client_dir: Path, service_url: str
) -> None:
    seen = drive(client_dir, service_url)

    hello = seen["hello"]
    assert types(hello)[0] == "RUN_STARTED" and types(hello)[-1] == "RUN_FINISHED"
    text = "".join(e["delta"] for e in hello if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == "[offline model] You said: Hello"
    assert hello[-1]["usage"][0]["inputTokens"] > 0

    paused = seen["paused"]
    assert types(paused) == ["RUN_STARTED", "TOOL_CALL_START", "TOOL_CALL_END", "RUN_FINISHED"]
    [interrupt] = paused[-1]["outcome"]["interrupts"]
    assert interrupt["toolCallId"] == interrupt["id"] == paused[1]["toolCallId"]
    assert interrupt["metadata"] == {"tool_name": "close_account", "arguments": '{"account": "42"}'}

    resumed = seen["resumed"]
    result = next(e for e in resumed if e["type"] == "TOOL_CALL_RESULT")
    assert result["toolCallId"] == interrupt["id"]
    reply = "".join(e["delta"] for e in resumed if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert reply.startswith("[offline model] close_account returned: ")
    assert '"status":"closed"' in reply
    assert "outcome" not in resumed[-1] or resumed[-1]["outcome"]["type"] == "success"
    # The client's own record of the thread: the call, its result, the reply.
    roles = [message["role"] for message in seen["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]

    # A frontend tool: its call ends the run, and the next run carries the page's result.
    called = seen["called"]
    assert types(called) == [
        "RUN_STARTED",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "RUN_FINISHED",
    ]
    assert called[1]["toolCallName"] == "show_chart"
    assert json.loads(called[2]["delta"]) == {"kind": "bar"}
    pending = {"type": "success", "pendingToolCallIds": [called[1]["toolCallId"]]}
    assert called[-1]["outcome"] == pending
    continued = seen["continued"]
    reply = "".join(e["delta"] for e in continued if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert reply == "[offline model] show_chart returned: drawn"
    roles = [message["role"] for message in seen["pageMessages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]

    for stream in ("hello", "paused", "resumed", "called", "continued"):
        assert_conformant(seen[stream])
