"""`<project_slug> eval DATASET.jsonl`: run cases against the service and check what it answers.

A case is one JSON line: `{"name", "messages", "expect": {...}}` (see `Expect`). Cases run
one at a time against the service in this process (or a running one, with `--url`), through
`POST /v1/chat`, as any client calls it.

The model calls of each case are recorded to, and replayed from, a cassette of its own
(`evals/cassettes/<dataset>/<case>.yaml`), with vcrpy: `--record` calls the configured model
and writes them; `--replay`, the default, answers every model call from them, so that CI
gates on a real model's behaviour with no key and no cost. A request is matched by its method,
path and JSON body (the prompt, the conversation, the tools offered), so a changed prompt or
tool is a request with no recording: the case fails, saying so, until it is recorded again.
"""

import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..project import ENGINE, ENV_PREFIX, PACKAGE_NAME, PROJECT_SLUG
from ..settings import ConfigurationError, CoreSettings

Mode = Literal["replay", "record", "live"]
# What a recording may not keep: the key the model server was called with (its header is
# never written), and keys that show up in a body, such as one echoed in an error.
DEFAULT_REDACTIONS = (r"sk-[A-Za-z0-9_-]{16,}",)
SECRET_HEADERS = ("authorization", "api-key", "x-api-key", "openai-organization", "cookie")
RECORDING_FILE = "recording.json"  # the engine and model the cassettes were recorded with


class Expect(BaseModel):
    """What a case's answer must be; every field is optional, and all given must hold."""

    model_config = ConfigDict(extra="forbid")

    contains: str | list[str] | None = Field(None, description="Text the reply contains.")
    regex: str | None = Field(None, description="A regular expression the reply matches.")
    json_schema: dict[str, Any] | None = Field(
        None, description="A JSON schema the reply, or the JSON object it holds, validates."
    )
    tools: list[str] | None = Field(None, description="The tools called, by name, in order.")
    tool_arguments: dict[str, dict[str, Any]] | None = Field(
        None, description="For a tool, arguments (a subset) that one of its calls had."
    )
    status: Literal["completed", "awaiting_input", "awaiting_approval"] | None = None
    stop_reason: str | None = None
    max_seconds: float | None = Field(None, gt=0, description="Longest the turn may take.")
    max_tokens: int | None = Field(None, gt=0, description="Most tokens the turn may use.")
    judge: str | None = Field(
        None,
        min_length=1,
        description="A rubric the configured model grades the reply against (pass or fail, "
        "with its reason); its call is recorded and replayed like the agents'.",
    )


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    messages: list[dict[str, Any]] = Field(min_length=1)
    expect: Expect = Field(default_factory=Expect)


class DatasetError(Exception):
    """A dataset that cannot be run; the message names the line and what is wrong."""


def load_dataset(path: Path) -> list[Case]:
    cases: list[Case] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            cases.append(Case.model_validate_json(line))
        except ValidationError as error:
            problem = error.errors(include_url=False)[0]
            where = ".".join(map(str, problem["loc"])) or "the line"
            raise DatasetError(f"{path}:{number}: {where}: {problem['msg']}") from None
    names = [case.name for case in cases]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise DatasetError(f"{path}: case names must be unique; repeated: {', '.join(repeated)}")
    if not cases:
        raise DatasetError(f"{path}: no cases")
    return cases


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class Outcome:
    """One case's answer, as much of it as the checks need."""

    status_code: int
    body: dict[str, Any]
    seconds: float

    @property
    def reply(self) -> str:
        return str(self.body.get("reply", ""))

    @property
    def tool_calls(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Each tool call by name, with its arguments; None where the service hides them
        (it shows them only with `RESPONSE_TOOL_DETAILS=true`)."""
        calls: list[tuple[str, dict[str, Any] | None]] = []
        for message in self.body.get("messages", []):
            if message.get("type") != "tool_call":
                continue
            if message.get("content") is None:
                calls.append((message["name"], None))
                continue
            try:
                arguments = json.loads(message["content"] or "{}")
            except json.JSONDecodeError:
                arguments = {}
            calls.append((message["name"], arguments if isinstance(arguments, dict) else {}))
        return calls

    @property
    def tokens(self) -> int:
        usage = self.body.get("usage") or {}
        return int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))


def check(expect: Expect, outcome: Outcome) -> list[Check]:
    """Each expectation of `expect`, held against `outcome`."""
    if outcome.status_code != 200:
        error = outcome.body.get("error", {})
        return [
            Check(
                "answered",
                False,
                f"{outcome.status_code} {error.get('type')}: {error.get('message')}",
            )
        ]
    checks = [Check("answered", True)]
    reply = outcome.reply
    if expect.contains is not None:
        for text in [expect.contains] if isinstance(expect.contains, str) else expect.contains:
            checks.append(Check(f"contains {text!r}", text in reply, _excerpt(reply)))
    if expect.regex is not None:
        checks.append(
            Check(
                f"matches {expect.regex!r}",
                re.search(expect.regex, reply) is not None,
                _excerpt(reply),
            )
        )
    if expect.json_schema is not None:
        checks.append(_schema_check(expect.json_schema, reply))
    names = [name for name, _ in outcome.tool_calls]
    if expect.tools is not None:
        checks.append(Check(f"tools {expect.tools}", names == expect.tools, f"called {names}"))
    for tool, subset in (expect.tool_arguments or {}).items():
        had = [arguments for name, arguments in outcome.tool_calls if name == tool]
        shown = [arguments for arguments in had if arguments is not None]
        passed = any(subset.items() <= arguments.items() for arguments in shown)
        detail = f"calls: {had}"
        if len(shown) < len(had) and not passed:
            detail = (
                f"the service hides tool arguments: start it with "
                f"{ENV_PREFIX}RESPONSE_TOOL_DETAILS=true for this check"
            )
        checks.append(Check(f"{tool} called with {subset}", passed, detail))
    for name in ("status", "stop_reason"):
        wanted = getattr(expect, name)
        if wanted is not None:
            got = outcome.body.get(name)
            checks.append(Check(f"{name} {wanted}", got == wanted, f"got {got}"))
    if expect.max_seconds is not None:
        checks.append(
            Check(
                f"within {expect.max_seconds} s",
                outcome.seconds <= expect.max_seconds,
                f"took {outcome.seconds:.2f} s",
            )
        )
    if expect.max_tokens is not None:
        checks.append(
            Check(
                f"at most {expect.max_tokens} tokens",
                outcome.tokens <= expect.max_tokens,
                f"used {outcome.tokens}",
            )
        )
    return checks


def _schema_check(schema: dict[str, Any], reply: str) -> Check:
    import jsonschema  # a development dependency, as this command is

    name = "matches the JSON schema"
    found = _json_in(reply)
    if found is None:
        return Check(name, False, "the reply holds no JSON")
    try:
        jsonschema.validate(found, schema)
    except jsonschema.ValidationError as error:
        return Check(name, False, error.message)
    return Check(name, True)


def _json_in(reply: str) -> Any:
    """The reply as JSON, or the outermost JSON object or array inside it."""
    candidates = [reply]
    for opening, closing in ("{}", "[]"):
        start, end = reply.find(opening), reply.rfind(closing)
        if 0 <= start < end:
            candidates.append(reply[start : end + 1])
    for text in candidates:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            continue
    return None


def _excerpt(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class CaseResult:
    name: str
    passed: bool
    checks: list[Check]
    seconds: float
    tokens: int
    reply: str
    # Model calls the cassette had no recording for (replay only).
    unrecorded_calls: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "tokens": self.tokens,
            "reply": self.reply,
            "unrecorded_calls": self.unrecorded_calls,
            "checks": [vars(c) for c in self.checks],
        }


@dataclass
class Report:
    dataset: str
    mode: Mode
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return sum(c.passed for c in self.cases) / len(self.cases) if self.cases else 0.0

    def as_dict(self) -> dict[str, Any]:
        passed = sum(c.passed for c in self.cases)
        return {
            "dataset": self.dataset,
            "mode": self.mode,
            "passed": passed,
            "failed": len(self.cases) - passed,
            "pass_rate": round(self.pass_rate, 4),
            "cases": [c.as_dict() for c in self.cases],
        }


class Cassettes:
    """One vcrpy cassette per case: what `--record` writes and `--replay` answers from."""

    def __init__(
        self, dataset: Path, directory: Path, mode: Mode, redactions: Sequence[str]
    ) -> None:
        import vcr  # a development dependency, as this command is

        self.dataset = dataset
        self.directory = directory
        self.mode = mode
        self._redact = [re.compile(pattern) for pattern in redactions]
        self._vcr = vcr.VCR(
            record_mode="all" if mode == "record" else "none",
            match_on=["method", "path", "json_body"],
            filter_headers=list(SECRET_HEADERS),
            before_record_request=self._model_call,
            before_record_response=self._redact_response,
            decode_compressed_response=True,
        )
        self._vcr.register_matcher("json_body", _same_json_body)

    def _model_call(self, request: Any) -> Any:
        """Only model calls are recorded (not the eval's own calls to the service), with
        secrets blanked; also applied to live calls before they are matched."""
        if not request.path.endswith("/chat/completions"):
            return None
        if request.body:
            request.body = self._redacted(request.body)
        return request

    def _redact_response(self, response: dict[str, Any]) -> dict[str, Any]:
        body = response.get("body", {})
        if isinstance(body.get("string"), bytes):
            body["string"] = self._redacted(body["string"])
        for header in ("set-cookie", "openai-organization"):
            response.get("headers", {}).pop(header, None)
        return response

    def _redacted(self, data: bytes | str) -> bytes:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        for pattern in self._redact:
            text = pattern.sub("[REDACTED]", text)
        return text.encode("utf-8")

    def path(self, case: Case) -> Path:
        return self.directory / f"{case.name}.yaml"

    def around(self, case: Case) -> "CaseCassette":
        if self.mode == "record":
            self.path(case).unlink(missing_ok=True)
        return CaseCassette(self, case)


class CaseCassette:
    def __init__(self, cassettes: Cassettes, case: Case) -> None:
        self._cassettes = cassettes
        self._case = case
        self._context: AbstractContextManager[Any] | None = None
        self.unrecorded = 0

    def __enter__(self) -> "CaseCassette":
        self._context = self._cassettes._vcr.use_cassette(str(self._cassettes.path(self._case)))
        cassette = self._context.__enter__()
        # vcrpy asks a replayed cassette `filter_request` exactly when a call has no
        # recording, and refuses the call if it is a model call (the filter keeps it): the
        # service then answers with an error, and this count says why.
        keeps = cassette.filter_request

        def counted(request: Any) -> Any:
            kept = keeps(request)
            if kept:
                self.unrecorded += 1
            return kept

        if self._cassettes.mode == "replay":
            cassette.filter_request = counted
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._context is not None
        self._context.__exit__(*exc)


def _same_json_body(first: Any, second: Any) -> None:
    if _normal_json(first.body) != _normal_json(second.body):
        raise AssertionError("the request bodies differ")


def _normal_json(body: bytes | str | None) -> str:
    if not body:
        return ""
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body.decode("utf-8", "replace") if isinstance(body, bytes) else body


async def run_case(client: httpx.AsyncClient, case: Case) -> Outcome:
    started = time.perf_counter()
    response = await client.post("/v1/chat", json={"messages": case.messages})
    seconds = time.perf_counter() - started
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = {"error": {"type": "not_json", "message": response.text[:200]}}
    return Outcome(response.status_code, body, seconds)


JUDGE_INSTRUCTIONS = """\
You grade an assistant's reply against a rubric. Read the rubric, the conversation and the
reply, then answer with one JSON object and nothing else:
{"pass": true or false, "reason": "one sentence saying why"}"""

Judge = Callable[[str, Sequence[dict[str, Any]], str], Awaitable[str]]


async def judged(judge: Judge, rubric: str, case: Case, outcome: Outcome) -> Check:
    """The judge's verdict on the reply, as a check."""
    name = f"judged: {_excerpt(rubric, 60)}"
    answer = await judge(rubric, case.messages, outcome.reply)
    verdict = _json_in(answer)
    if not isinstance(verdict, dict) or not isinstance(verdict.get("pass"), bool):
        return Check(name, False, f"the judge gave no verdict: {_excerpt(answer)}")
    return Check(name, verdict["pass"], str(verdict.get("reason", "")))


def judge_prompt(rubric: str, messages: Sequence[dict[str, Any]], reply: str) -> str:
    conversation = "\n".join(f"{m.get('role')}: {m.get('content')}" for m in messages)
    return f"{rubric}\n\nThe conversation:\n{conversation}\n\nThe reply to grade:\n{reply}"


async def evaluate(
    cases: Sequence[Case],
    client: httpx.AsyncClient,
    cassettes: Cassettes | None,
    on_result: Callable[[CaseResult], None] = lambda result: None,
    judge: Judge | None = None,
) -> list[CaseResult]:
    """Run `cases` one at a time (a cassette's recording is process-wide) and check them."""
    results = []
    for case in cases:
        around = cassettes.around(case) if cassettes else nullcontext()
        with around:
            outcome = await run_case(client, case)
            checks = check(case.expect, outcome)
            if case.expect.judge and judge is not None and outcome.status_code == 200:
                checks.append(await judged(judge, case.expect.judge, case, outcome))
        unrecorded = getattr(around, "unrecorded", 0)
        if cassettes and unrecorded:
            checks.insert(
                0,
                Check(
                    "recorded",
                    False,
                    f"{unrecorded} model call(s) have no recording in {cassettes.path(case)}: "
                    "the prompt, tools or conversation changed since it was recorded; record "
                    f"it again with `{PROJECT_SLUG} eval {cassettes.dataset} --record`",
                ),
            )
        result = CaseResult(
            name=case.name,
            passed=all(c.passed for c in checks),
            checks=checks,
            seconds=outcome.seconds,
            tokens=outcome.tokens,
            reply=outcome.reply,
            unrecorded_calls=unrecorded,
        )
        results.append(result)
        on_result(result)
    return results


def add_arguments(parser: Any) -> None:
    parser.add_argument("dataset", type=Path, help="a JSON Lines file of cases")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--replay",
        dest="mode",
        action="store_const",
        const="replay",
        help="answer every model call from the cassettes (the default; no key, no cost)",
    )
    mode.add_argument(
        "--record",
        dest="mode",
        action="store_const",
        const="record",
        help="call the configured model and record its answers into the cassettes",
    )
    mode.add_argument(
        "--live",
        dest="mode",
        action="store_const",
        const="live",
        help="call the model, record nothing",
    )
    parser.set_defaults(mode="replay")
    parser.add_argument(
        "--url", help="evaluate a running service at this URL instead (with --live only)"
    )
    parser.add_argument("--api-key", help="the key to call --url with")
    parser.add_argument(
        "--app",
        default=f"{PACKAGE_NAME}.main:app",
        metavar="MODULE:NAME",
        help="the app to evaluate in this process, or a function making it (default: %(default)s)",
    )
    parser.add_argument(
        "--cassettes", type=Path, help="default: cassettes/<dataset name>/ beside the dataset"
    )
    parser.add_argument(
        "--redact",
        action="append",
        default=[],
        metavar="REGEX",
        help="blank what matches in recorded bodies too (repeatable); keys like sk-... always are",
    )
    parser.add_argument("--report", type=Path, default=Path("eval-report.json"))
    parser.add_argument("--compare", type=Path, metavar="OLD.json", help="show what changed")
    parser.add_argument(
        "--min-pass-rate",
        type=float,
        default=1.0,
        help="fail (exit 1) below this share of passing cases (default: 1.0, all)",
    )


def run(args: Any) -> int:
    """The `eval` command: 0 when the pass rate is met, 1 when not, 2 when it cannot run."""
    import asyncio

    try:
        cases = load_dataset(args.dataset)
        if args.url and args.mode != "live":
            raise DatasetError(
                "--url evaluates a running service: its model calls happen "
                "there, out of reach of the cassettes; add --live"
            )
        directory = args.cassettes or args.dataset.parent / "cassettes" / args.dataset.stem
        cassettes = None
        if args.mode != "live":
            redactions = [*DEFAULT_REDACTIONS, *args.redact]
            cassettes = Cassettes(args.dataset, directory, args.mode, redactions)
        if not args.url:
            _configure_service(directory, args.mode)
    except (DatasetError, OSError) as error:
        print(error, file=sys.stderr)
        return 2
    report = Report(str(args.dataset), args.mode)
    try:
        report.cases = asyncio.run(
            _evaluate(cases, cassettes, args.url or args.app, args.api_key, _print_row)
        )
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 2
    except httpx.TransportError as error:
        print(f"cannot reach {args.url}: {error or type(error).__name__}", file=sys.stderr)
        return 2
    if args.mode == "record":
        _save_recording_settings(directory)
    print(_summary(report))
    args.report.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    print(f"report: {args.report}")
    if args.compare:
        print(compare(json.loads(args.compare.read_text(encoding="utf-8")), report.as_dict()))
    unrecorded = any(case.unrecorded_calls for case in report.cases)
    return 0 if report.pass_rate >= args.min_pass_rate and not unrecorded else 1


def _configure_service(directory: Path, mode: Mode) -> None:
    """Settings for the service this process runs: read before it is imported."""
    overrides: dict[str, str | None] = {
        # Tool calls' arguments are in the answers, for `tool_arguments`.
        "RESPONSE_TOOL_DETAILS": "true",
        # In-process calls carry no key.
        "ENVIRONMENT": "development",
        "API_KEYS": "",
        # The table is the output; the service's start-up warnings (offline model, no API
        # keys) are expected here.
        "LOG_LEVEL": "ERROR",
    }
    if mode == "replay":
        recording = directory / RECORDING_FILE
        if not recording.is_file():
            raise DatasetError(
                f"{directory} holds no recordings ({RECORDING_FILE} is missing): record them "
                f"with `{PROJECT_SLUG} eval DATASET --record` against the model"
            )
        model = json.loads(recording.read_text(encoding="utf-8"))
        # Recordings from before template 0.4 name no engine: AutoGen made them.
        recorded_on = model.get("engine", "autogen")
        if recorded_on != ENGINE:
            # Each engine words its model calls its own way: none would find its recording.
            raise DatasetError(
                f"{directory} was recorded on the {recorded_on} engine, and this service runs "
                f"on {ENGINE}, whose model calls differ: record them again with "
                f"`{PROJECT_SLUG} eval DATASET --record` against the model"
            )
        overrides |= {
            "MODEL_PROVIDER": model["model_provider"],
            "MODEL_NAME": model["model_name"],
            "MODEL_BASE_URL": model["model_base_url"],
            # The recorded answers are what a call gets: a retry would only wait.
            "MODEL_MAX_RETRIES": "0",
        }
        if model["model_provider"] == "openai":
            overrides["MODEL_API_KEY"] = "replayed-no-key-needed"
    for name, value in overrides.items():
        if value is None:
            os.environ.pop(ENV_PREFIX + name, None)
        else:
            os.environ[ENV_PREFIX + name] = value
    if mode != "live":
        directory.mkdir(parents=True, exist_ok=True)


def _save_recording_settings(directory: Path) -> None:
    from importlib import import_module

    settings = import_module(f"{PACKAGE_NAME}.settings").Settings.load()
    model = {
        "engine": ENGINE,
        "model_provider": settings.model_provider,
        "model_name": settings.model_name,
        "model_base_url": str(settings.model_base_url) if settings.model_base_url else None,
    }
    text = json.dumps(model, indent=2) + "\n"
    (directory / RECORDING_FILE).write_text(text, encoding="utf-8")


async def _evaluate(
    cases: Sequence[Case],
    cassettes: Cassettes | None,
    target: str,
    api_key: str | None,
    on_result: Callable[[CaseResult], None],
) -> list[CaseResult]:
    """Evaluate the service at `target`: a URL, or the `MODULE:NAME` of an app to run here."""
    from importlib import import_module

    from ..agent.engine import Engine, load_engine
    from ..agent.instrumentation import Instrumentation
    from ..agent.specs import AgentSpec

    remote = target.startswith(("http://", "https://"))
    judge_engine: Engine | None = None
    if any(case.expect.judge for case in cases):
        # The judge is this process's engine, on its own model client. A running service's
        # own settings (its API keys, its Redis) are no concern of a client: only the
        # model's are read then.
        settings_class = (
            CoreSettings if remote else import_module(f"{PACKAGE_NAME}.settings").Settings
        )
        judge_engine = load_engine(
            AgentSpec(name="judge", system_prompt=JUDGE_INSTRUCTIONS),
            settings=settings_class.load(),
            instrumentation=Instrumentation(),
            count_tokens=len,  # the judge's one call keeps no history to trim
            budget_for=lambda _agent, _overhead: 0,
        )
        await judge_engine.start()

    async def judge(rubric: str, messages: Sequence[dict[str, Any]], reply: str) -> str:
        assert judge_engine is not None  # built whenever a case has a rubric
        prompt = judge_prompt(rubric, messages, reply)
        return await judge_engine.complete(JUDGE_INSTRUCTIONS, prompt)

    print(f"{'case':<32} {'result':<6} {'seconds':>8} {'tokens':>7}  what failed")
    try:
        if remote:
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            async with httpx.AsyncClient(base_url=target, headers=headers, timeout=300) as client:
                return await evaluate(cases, client, cassettes, on_result, judge)
        return await _evaluate_here(cases, cassettes, target, on_result, judge)
    finally:
        if judge_engine is not None:
            await judge_engine.aclose()


async def _evaluate_here(
    cases: Sequence[Case],
    cassettes: Cassettes | None,
    target: str,
    on_result: Callable[[CaseResult], None],
    judge: Judge,
) -> list[CaseResult]:
    from ..http.app import load_app

    app = load_app(target)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://service", timeout=300
        ) as client:
            return await evaluate(cases, client, cassettes, on_result, judge)


def _print_row(result: CaseResult) -> None:
    failed = "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.passed)
    verdict = "pass" if result.passed else "FAIL"
    print(f"{result.name:<32} {verdict:<6} {result.seconds:>8.2f} {result.tokens:>7}  {failed}")


def _summary(report: Report) -> str:
    passed = sum(c.passed for c in report.cases)
    return f"{passed} of {len(report.cases)} cases passed ({report.pass_rate:.0%}), {report.mode}"


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What changed between two reports, case by case."""
    before = {case["name"]: case for case in old["cases"]}
    lines = [
        f"compared with {old['dataset']} ({old['mode']}): pass rate "
        f"{old['pass_rate']:.0%} -> {new['pass_rate']:.0%}"
    ]
    for case in new["cases"]:
        earlier = before.pop(case["name"], None)
        if earlier is None:
            lines.append(f"  new       {case['name']}: {'pass' if case['passed'] else 'FAIL'}")
        elif earlier["passed"] != case["passed"]:
            change = "fixed     " if case["passed"] else "REGRESSED "
            lines.append(f"  {change}{case['name']}")
        if earlier is not None and earlier["tokens"] and case["tokens"] != earlier["tokens"]:
            lines.append(f"  tokens    {case['name']}: {earlier['tokens']} -> {case['tokens']}")
    lines += [f"  removed   {name}" for name in before]
    return "\n".join(lines)
