"""Moving a live service between engines: its team's code stays, its users' open
conversations go on.

A service rendered on AutoGen with Redis sessions keeps conversations in a real Redis, one
of them paused on a call that waits for approval (and, with a team, one waiting for the
user's answer). `copier update --data engine=agent_framework` moves it to Agent Framework;
the service, started again on the same Redis, continues them, and pauses another. Then the
same back to AutoGen, which approves that one: a rollback loses nothing either. Done for a
lone agent and for a round robin team whose files the team changed.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from rendering import Rendered, render, require_python
from test_update import (
    TEAM_TOOL,
    TemplateRepository,
    commit_all,
    edit,
    make_template_repository,
    merge_leftovers,
    output_of_subprocesses,
    update,
)

API_KEY = "engine-switch-key"
APPROVAL_TOOL = '''@tool(requires_approval=True)
def issue_refund(customer_id: str, amount: str) -> dict[str, object]:
    """Refund part of a customer's fee; a person approves each refund first."""
    return {"customer_id": customer_id, "refunded": amount}


'''


# What a team changes in its files before it switches engines: its own tool, given to an
# agent of the team, a prompt, a setting, and a test of them.
TEAM_PROMPT_LINE = "Sign every reply as the support desk."
TEAM_SETTING = """    escalation_severity: int = Field(
        2, ge=1, le=4, description="Tickets this severe or worse (1 is an outage) page on-call."
    )
"""
TEAM_TEST = '''\
"""The team's own tool, prompt and setting, on whichever engine runs the team."""

import pytest

from {pkg}.runtime import chat_body, serve
from {pkg}.settings import Settings
from {pkg}.team import TEAM

pytestmark = pytest.mark.anyio


def test_the_writer_signs_and_the_setting_is_read() -> None:
    assert "{prompt}" in TEAM.agents[2].system_prompt
    assert Settings().escalation_severity == 2


async def test_triage_calls_the_teams_tool() -> None:
    async with serve(Settings(response_tool_details=True), TEAM) as client:
        message = '@triage: /tool ticket_priority {{"severity": 1}}'
        response = await client.post("/v1/chat", json=chat_body(message))
    results = [m for m in response.json()["messages"] if m["type"] == "tool_result"]
    assert [(m["source"], m["content"]) for m in results] == [("triage", '{{"priority":"P1"}}')]
'''
# The files the team changed, which the switch must leave as they are.
TEAM_FILES = ("team.py", "tools.py", "settings.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"a process did not start listening on {port}:\n{log.read_text()}")
            time.sleep(0.1)


@contextmanager
def running(command: list[str], port: int, log: Path, **options: Any) -> Iterator[None]:
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **options
        )
    try:
        wait_for_port(port, process, log)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: `apt-get install redis-server`")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(workdir)]
    with running(command, port, workdir / "redis.log"):
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="module")
def template_repository(tmp_path_factory: pytest.TempPathFactory) -> TemplateRepository:
    return make_template_repository(tmp_path_factory.mktemp("template") / "repository")


@dataclass(frozen=True)
class Client:
    """`POST /v1/chat` on a running service, with the standard library only."""

    base_url: str

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.base_url}/v1/chat",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)


class Service:
    """The rendered service in its git repository, started on demand on a shared Redis."""

    def __init__(self, rendered: Rendered, redis_url: str, logs: Path) -> None:
        self.rendered = rendered
        self.redis_url = redis_url
        self.logs = logs

    @property
    def engine(self) -> str:
        answers = yaml.safe_load((self.rendered.path / ".copier-answers.yml").read_text())
        return answers["engine"]

    def install(self) -> None:
        self.rendered.run("python", "-c", "")  # `uv run` syncs the environment to the lock

    @contextmanager
    def serving(self) -> Iterator[Client]:
        prefix = self.rendered.answers["env_prefix"]
        port = free_port()
        env = {
            **os.environ,
            "UV_PYTHON_DOWNLOADS": "never",
            f"{prefix}MODEL_PROVIDER": "offline",
            f"{prefix}REDIS_URL": self.redis_url,
            f"{prefix}API_KEYS": json.dumps([API_KEY]),
        }
        env.pop("VIRTUAL_ENV", None)
        command = ["uv", "run", "--frozen", self.rendered.answers["project_slug"], "serve"]
        command += ["--port", str(port)]
        log = self.logs / f"serve-{self.engine}.log"
        with running(command, port, log, cwd=self.rendered.path, env=env):
            yield Client(f"http://127.0.0.1:{port}")

    def switch_to(self, engine: str, template: TemplateRepository) -> None:
        log = self.logs / f"update-to-{engine}.log"
        with output_of_subprocesses(log):
            update(self.rendered.path, vcs_ref=template.commit, data={"engine": engine}, quiet=True)
        assert merge_leftovers(self.rendered.path) == [], log.read_text()[-3000:]
        commit_all(self.rendered.path, f"switch to {engine}")
        self.install()


def say(client: Client, session_id: str, text: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    status, answer = client.chat({"messages": messages, "session_id": session_id})
    assert status == 200, answer
    return answer


def render_service(template: TemplateRepository, work: Path, answers: dict[str, Any]) -> Rendered:
    require_python("3.11", "render and update a service")
    path = render(work / "service", answers, template=template.path, vcs_ref="HEAD")
    return Rendered(work.name, path, yaml.safe_load((path / ".copier-answers.yml").read_text()))


@pytest.fixture(scope="module")
def service(
    template_repository: TemplateRepository,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Service:
    work = tmp_path_factory.mktemp("engine-switch")
    answers = {"engine": "autogen", "session_store": "redis"}
    rendered = render_service(template_repository, work, answers)
    tools = rendered.path / "src" / rendered.answers["package_name"] / "tools.py"
    edit(tools, lambda text: text.replace("\nTOOLS = [", "\n" + APPROVAL_TOOL + "TOOLS = ["))
    edit(
        tools, lambda text: text.replace("parse_claim_amount]", "parse_claim_amount, issue_refund]")
    )
    commit_all(rendered.path, "the team's approval tool")
    running_service = Service(rendered, redis_url, work)
    running_service.install()
    return running_service


@pytest.fixture(scope="module")
def team_service(
    template_repository: TemplateRepository,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Service:
    """A round robin of triage, billing and writer, with the team's edits committed."""
    work = tmp_path_factory.mktemp("engine-switch-team")
    answers = {"engine": "autogen", "session_store": "redis", "agent_team": "round_robin"}
    rendered = render_service(template_repository, work, answers)
    package = rendered.answers["package_name"]
    source = rendered.path / "src" / package
    edit(
        source / "tools.py",
        lambda text: text.replace("\nTOOLS = [", "\n" + TEAM_TOOL + "TOOLS = ["),
    )
    edit(
        source / "team.py",
        lambda text: (
            text.replace(
                "import lookup_customer, parse_claim_amount",
                "import lookup_customer, parse_claim_amount, ticket_priority",
            )
            .replace("tools=[lookup_customer],", "tools=[lookup_customer, ticket_priority],")
            .replace(
                "Never state a fact they did not find.",
                f"Never state a fact they did not find.\n{TEAM_PROMPT_LINE}",
            )
        ),
    )
    edit(
        source / "settings.py",
        lambda text: text.replace(
            "from .runtime import RuntimeSettings\n",
            "from pydantic import Field\n\nfrom .runtime import RuntimeSettings\n",
        ).replace("    pass\n", TEAM_SETTING),
    )
    (rendered.path / "tests" / "test_team_edits.py").write_text(
        TEAM_TEST.format(pkg=package, prompt=TEAM_PROMPT_LINE)
    )
    commit_all(rendered.path, "the team's tool, prompt, setting and test")
    rendered.run("ruff", "check", ".")
    rendered.run("ruff", "format", "--check", ".")
    running_service = Service(rendered, redis_url, work)
    running_service.install()
    return running_service


def approve(client: Client, session_id: str, call_id: str) -> dict[str, Any]:
    approval = {"id": call_id, "decision": "approve"}
    status, answer = client.chat({"session_id": session_id, "approvals": [approval]})
    assert status == 200, answer
    assert answer["status"] == "completed"
    return answer


def test_open_conversations_go_on_after_switching_engines_and_back(
    service: Service, template_repository: TemplateRepository
) -> None:
    refund = '/tool issue_refund {"customer_id": "C-1001", "amount": "20"}'
    with service.serving() as client:
        assert say(client, "plain", "canary-7f3a is my order")["status"] == "completed"
        [paused_by_autogen] = say(client, "paused", refund)["pending_tool_calls"]

    service.switch_to("agent_framework", template_repository)
    with service.serving() as client:
        history = say(client, "plain", "/transcript")["reply"]
        assert "canary-7f3a is my order" in history  # AutoGen's turn, in Agent Framework's context
        assert say(client, "plain", "canary-91be under Agent Framework")["status"] == "completed"
        approved = approve(client, "paused", paused_by_autogen["id"])
        assert "issue_refund returned" in approved["reply"]
        [paused_by_agent_framework] = say(client, "paused-again", refund)["pending_tool_calls"]

    service.switch_to("autogen", template_repository)
    with service.serving() as client:
        history = say(client, "plain", "/transcript")["reply"]
        approved = approve(client, "paused-again", paused_by_agent_framework["id"])
    assert "canary-7f3a is my order" in history
    assert "canary-91be under Agent Framework" in history
    assert "issue_refund returned" in approved["reply"]


def spoken(answer: dict[str, Any], source: str) -> str:
    """What `source` said in a turn, its texts joined."""
    return " ".join(
        m["content"] for m in answer["messages"] if m["type"] == "text" and m["source"] == source
    )


def team_files(service: Service) -> dict[str, str]:
    source = service.rendered.path / "src" / service.rendered.answers["package_name"]
    files = {name: (source / name).read_text() for name in TEAM_FILES}
    tests = service.rendered.path / "tests"
    return files | {"test_team_edits.py": (tests / "test_team_edits.py").read_text()}


def test_a_teams_code_and_conversations_go_on_after_switching_engines_and_back(
    team_service: Service, template_repository: TemplateRepository
) -> None:
    service = team_service
    refund = '@billing: /tool issue_refund {"customer_id": "C-1001", "amount": "20", "reason": "x"}'
    edited = team_files(service)
    with service.serving() as client:
        assert say(client, "plain", "canary-4c2b is my order")["status"] == "completed"
        assert (
            say(client, "asking", "@triage: /ask Which customer id is yours?")["status"]
            == "awaiting_input"
        )
        [paused_by_autogen] = say(client, "paused", refund)["pending_tool_calls"]

    service.switch_to("agent_framework", template_repository)
    assert team_files(service) == edited
    service.rendered.run("ruff", "check", ".")
    result = service.rendered.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rA",
        "tests/test_team_edits.py",
        "tests/test_team.py",
    )
    assert "PASSED tests/test_team_edits.py::test_triage_calls_the_teams_tool" in result.stdout
    with service.serving() as client:
        history = say(client, "plain", "@triage: /transcript")
        # AutoGen's turn, in the context of Agent Framework's first speaker.
        assert "canary-4c2b is my order" in spoken(history, "triage")
        answered = say(client, "asking", "C-1001")
        assert spoken(answered, "triage").endswith("You said: C-1001")  # the one that asked
        approved = approve(client, "paused", paused_by_autogen["id"])
        assert "issue_refund returned" in spoken(approved, "billing")
        [paused_by_agent_framework] = say(client, "paused-again", refund)["pending_tool_calls"]

    service.switch_to("autogen", template_repository)
    assert team_files(service) == edited
    with service.serving() as client:
        approved = approve(client, "paused-again", paused_by_agent_framework["id"])
        history = say(client, "plain", "@triage: /transcript")
    assert "issue_refund returned" in spoken(approved, "billing")
    assert approved["messages"][0]["source"] == "billing"  # not the round robin's first agent
    assert "canary-4c2b is my order" in spoken(history, "triage")
