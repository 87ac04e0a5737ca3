"""People's decisions on the tool calls that waited for them: the approved ones run, with
the arguments the approver may have edited, the rejected ones answer the model with why.
A frontend tool's call is settled the same way, with the result its client sent."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..contract import Approval
from .conversation import Awaiting
from .tools import is_tool_error, tool_error_json
from .turn import FrontendResult, InnerMessage, ToolCallFinished, ToolCallStarted, TurnEvent

# What the model is told a call that needs approval answered, until a person decides.
AWAITING_APPROVAL = "This call waits for a person's approval."
# And a call of a frontend tool, until its client sends the result.
AWAITING_FRONTEND = "The user's application runs this tool; its result comes next."

# The engine's way to run a tool that needs approval: (tool, arguments, call id) → its answer.
RunApproved = Callable[[str, Mapping[str, Any], str], Awaitable[str]]
# And to answer a call whose arguments it never ran with: (tool, problem, call id) → the error.
RefuseArguments = Callable[[str, str, str], str]


@dataclass(frozen=True)
class Decided:
    """A decided call's result, which takes the place of its placeholder."""

    call_id: str
    name: str
    content: str
    is_error: bool


def arguments_problem(arguments: str) -> str | None:
    """What makes tool arguments, in text, no JSON object; None if nothing."""
    try:
        parsed = json.loads(arguments)
    except ValueError as error:
        return f"not valid JSON ({error})"
    except RecursionError:
        return "not valid JSON (nested too deeply)"
    if not isinstance(parsed, dict):
        return "must be a JSON object, one member per argument"
    return None


async def decide(
    approvals: Sequence[Approval],
    awaiting: Awaiting,
    *,
    run: RunApproved,
    refuse: RefuseArguments,
    max_chars: int,
    settled: list[InnerMessage],
    results: dict[str, Decided],
) -> AsyncIterator[TurnEvent]:
    """Run the approved calls and refuse the rejected ones: yields the calls as they run,
    appends each result to `settled` (the turn's messages) and puts it in `results`, by call
    id, for the engine to set where the asking agent's placeholders were."""
    calls = {call.id: call for call in awaiting.calls}
    for approval in approvals:
        call = calls[approval.id]
        if isinstance(approval, FrontendResult):
            # Shown by the client that ran it: no event, no message of this turn's.
            results[call.id] = Decided(call.id, call.name, approval.content, approval.is_error)
            continue
        if approval.decision == "approve":
            arguments = approval.arguments or call.arguments
            yield ToolCallStarted(call.name, arguments, awaiting.agent, call.id)
            problem = arguments_problem(arguments)
            content = (
                refuse(call.name, f"arguments: {problem}", call.id)
                if problem
                else await run(call.name, json.loads(arguments), call.id)
            )
            failed = is_tool_error(content)
            yield ToolCallFinished(call.name, failed, awaiting.agent, call.id, content)
        else:
            reason = approval.reason or "A person declined to approve this call."
            content = tool_error_json("rejected", reason, retryable=False, max_chars=max_chars)
            failed = True
        results[call.id] = Decided(call.id, call.name, content, failed)
        settled.append(
            InnerMessage(awaiting.agent, "tool_result", content, call.name, call.id, failed)
        )


def calls_run(approvals: Sequence[Approval]) -> int:
    """The calls that the decisions run in this turn: the approved ones, not the frontend
    tools' calls, which their page ran."""
    return sum(
        approval.decision == "approve" and not isinstance(approval, FrontendResult)
        for approval in approvals
    )


def decisions_text(approvals: Sequence[Approval], awaiting: Awaiting) -> str:
    """The user's message that goes on from the decisions, for the asking agent."""
    names = {call.id: call.name for call in awaiting.calls}
    if awaiting.kind == "frontend_tools":
        ran = ", ".join(f"{names[a.id]} ({a.id})" for a in approvals)
        return f"My application ran {ran}: go on from the results."
    decided = [
        f"{names[a.id]} ({a.id}) {'approved' if a.decision == 'approve' else 'rejected'}"
        for a in approvals
    ]
    return "My decisions on the calls that waited for approval: " + "; ".join(decided) + "."
