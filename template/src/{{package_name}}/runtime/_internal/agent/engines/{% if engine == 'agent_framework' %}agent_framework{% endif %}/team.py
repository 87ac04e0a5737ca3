"""A team on Agent Framework: a group chat workflow (`GroupChatBuilder`) built for every turn,
as Agent Framework cannot run one workflow object twice at once (agent-framework#4766).

What a team keeps between turns is ours, in a versioned envelope in the session: each
agent's `AgentSession.to_dict()` (its own history, teammates' messages included), the
shared thread of what was said, and who speaks next. Not Agent Framework's workflow
checkpoints: they are pickled, for trusted storage only, and tied to the graph's shape.
"""

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_framework import (
    EXCLUDED_KEY,
    AgentExecutor,
    AgentResponseUpdate,
    AgentSession,
    Content,
    Message,
    RawAgent,
    Workflow,
)
from agent_framework_orchestrations import GroupChatBuilder, GroupChatState

from ...approvals import decisions_text
from ...conversation import SavedState
from ...history import trim_to_budget
from ...lineup import unreadable_state
from ...specs import USER
from ...tokens import message_tokens
from ...transcript import Posted, Transcript, TurnEnd, turn_result
from ...turn import InnerMessage, TurnEvent, TurnInput, TurnUsage, current_usage
from .client import HISTORY_SOURCE, message_text, transcript_session
from .compaction import starts_turn_of
from .state import TurnState, current_turn, events_while

if TYPE_CHECKING:
    from .engine import Engine

# The team kinds this engine runs.
TEAM_KINDS = frozenset({"round_robin", "selector", "swarm"})
# What a selector sends the model to choose the next speaker, as on AutoGen.
SELECTOR_PROMPT = """You choose who speaks next in a team of agents that answers a user.

The agents:
{roles}

The conversation so far:
{history}

Choose the next speaker from {participants}. Answer with the name alone."""
# How often a selector asks the model for a speaker before it falls back, as on AutoGen.
SELECTOR_ATTEMPTS = 3
# The version of the state a team keeps in a session (`SavedTeam`).
TEAM_STATE_FORMAT = 1


class TeamAgent(RawAgent[Any]):
    """An agent of a team. Its teammates' messages reach it as user messages with their
    name, as on AutoGen: Agent Framework passes them on as the assistant's own, which the
    model would take for words it said itself."""

    def run(self, messages: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(messages, list):
            messages = heard_by(self.name or "", messages)
        return super().run(messages, **kwargs)


def heard_by(name: str, messages: Sequence[Message]) -> list[Message]:
    """`messages` as the agent `name` is sent them: a teammate's as a user's, with a name."""
    return [
        Message(role="user", contents=list(m.contents), author_name=m.author_name)
        if m.role == "assistant" and m.author_name not in (None, name)
        else m
        for m in messages
    ]


@dataclass
class SavedTeam:
    """A team's state between turns."""

    sessions: dict[str, AgentSession]
    thread: list[dict[str, str]]  # what was said, as {"source", "content"}, oldest first
    next_speaker: str
    last_speaker: str | None = None  # whom a selector does not choose again at once

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TEAM_STATE_FORMAT,
            "agents": {name: session.to_dict() for name, session in self.sessions.items()},
            "thread": self.thread,
            "next_speaker": self.next_speaker,
            "last_speaker": self.last_speaker,
        }

    @classmethod
    def from_saved(cls, state: SavedState, names: Sequence[str]) -> "SavedTeam":
        """The team's state as saved; `StateRefused` if this engine cannot go on from it."""
        saved = state.engine_state
        if saved.get("format") != TEAM_STATE_FORMAT:
            raise unreadable_state(f"its team state has format {saved.get('format')!r}")
        try:
            agents = saved["agents"]
            sessions = {name: AgentSession.from_dict(agents[name]) for name in names}
            for session in sessions.values():
                stored = session.state.setdefault(HISTORY_SOURCE, {"messages": []})["messages"]
                if not all(isinstance(message, Message) for message in stored):
                    raise TypeError("a stored message is no message")
            thread = [
                {"source": str(entry["source"]), "content": str(entry["content"])}
                for entry in saved["thread"]
            ]
            next_speaker, last_speaker = saved["next_speaker"], saved["last_speaker"]
            if next_speaker not in names or last_speaker not in (None, *names):
                raise ValueError(f"no agent {next_speaker!r} or {last_speaker!r} in the team")
        # What Agent Framework raises on a session of another shape.
        except (LookupError, TypeError, ValueError, AttributeError) as error:
            raise unreadable_state("Agent Framework cannot load the team's sessions") from error
        return cls(sessions, thread, next_speaker, last_speaker)


class _Speakers:
    """Who speaks next, from the agent the turn starts with: in a round robin the team's
    agents in turn; in a swarm the same agent until it hands over, then the one it handed to
    (a swarm made with Agent Framework's `HandoffBuilder` would offer the model
    `handoff_to_<x>` tools, where AutoGen offers `transfer_to_<x>`, and one tool call at a
    time)."""

    def __init__(
        self,
        engine: "Engine",
        turn: TurnState,
        saved: SavedTeam,
        resume_at: str | None,
        trimmed: Callable[[list[dict[str, str]]], list[dict[str, str]]],
    ) -> None:
        self._engine = engine
        self._order = list(engine.names)
        self._turn = turn
        self._saved = saved
        self._resume_at = resume_at
        self._trimmed = trimmed
        self.last: str | None = saved.last_speaker

    async def choose(self, state: GroupChatState) -> str:
        if state.current_round == 0 and self._resume_at is not None:
            name = self._resume_at  # the agent that asked goes on
        elif state.current_round == 0 and self._engine.kind != "selector":
            name = self._saved.next_speaker
        elif self._engine.kind == "selector":
            name = await self._select()
        else:
            name = self.next_speaker()
        # The middleware tells this agent's calls from the others' by the turn's speaker.
        self._turn.agent = self.last = name
        self._turn.member = self._engine.lineup.members[name]
        return name

    async def _select(self) -> str:
        """The model's choice, as AutoGen's selector makes it: among the agents but the last
        to speak, asked again with what was wrong (up to `SELECTOR_ATTEMPTS` times), then
        the last speaker, or the first candidate."""
        candidates = [name for name in self._order if name != self.last]
        if len(candidates) == 1:
            return candidates[0]
        roles = "\n".join(
            re.sub(r"\s+", " ", f"{name}: {description}").strip()
            for name, description in self._engine.agent_descriptions.items()
        )
        history = "\n".join(
            f"{entry['source']}: {entry['content']}".rstrip() + "\n\n"
            for entry in self._trimmed(self._saved.thread)
        )
        prompt = SELECTOR_PROMPT.format(roles=roles, history=history, participants=str(candidates))
        asked = [Message(role="user", contents=[Content.from_text(prompt)])]
        for _ in range(SELECTOR_ATTEMPTS):
            answer = await self._engine.answer(asked)
            asked.append(Message(role="assistant", contents=[Content.from_text(answer)]))
            named = _mentioned(answer, self._order)
            if len(named) == 1 and named[0] != self.last:
                return named[0]
            if not named:
                feedback = f"No valid name was mentioned. Please select from: {candidates}."
            elif len(named) > 1:
                feedback = (
                    "Expected exactly one name to be mentioned. Please select only one from: "
                    f"{candidates}."
                )
            else:
                feedback = (
                    "Repeated speaker is not allowed, please select a different name from: "
                    f"{candidates}."
                )
            asked.append(Message(role="user", contents=[Content.from_text(feedback)]))
        return self.last or candidates[0]

    def next_speaker(self) -> str:
        """Who speaks after the agent that spoke last (the turn's speaker)."""
        last = self._turn.agent
        if self._engine.kind == "swarm":
            handed = self._turn.transcript.last_chat
            if handed is not None and handed.type == "handoff" and handed.name in self._order:
                return handed.name
            return last
        return self._order[(self._order.index(last) + 1) % len(self._order)]


def _mentioned(text: str, names: Sequence[str]) -> list[str]:
    """The agents `text` names, as AutoGen's selector finds them (whole words, an underscore
    also as a space or escaped)."""
    found = []
    for name in names:
        spellings = (name, name.replace("_", " "), name.replace("_", r"\_"))
        pattern = r"(?<=\W)(" + "|".join(re.escape(s) for s in spellings) + r")(?=\W)"
        if re.search(pattern, f" {text} "):
            found.append(name)
    return found


class _TurnEndCheck:
    """The turn-end policy as a group chat asks it, after the turn's input and after each
    agent spoke: tells the transcript what the speaker said, and the shared thread."""

    def __init__(self, end: TurnEnd, turn: TurnState, thread: list[dict[str, str]]) -> None:
        self._end = end
        self._turn = turn
        self._thread = thread
        self._seen = 0
        self._started = False

    def __call__(self, conversation: list[Message]) -> bool:
        new = conversation[self._seen :]
        self._seen = len(conversation)
        if not self._started:  # the user's message, before any agent spoke
            self._started = True
            self._thread.append({"source": USER, "content": message_text(new[-1])})
            return self._end.after([Posted(USER, "text")]) is not None
        speaker = self._turn.agent
        transcript = self._turn.transcript
        posted: Posted
        if self._turn.run_ended() and transcript.last_chat is not None:
            # To the user: a question, or a call waiting for approval.
            to_user = transcript.last_chat.name == USER
            posted = Posted(speaker, "to_user" if to_user else "other")
        else:
            texts = [m.text for m in new if m.role == "assistant" and m.text]
            if texts:
                transcript.text(speaker, texts[-1])
                self._thread.append({"source": speaker, "content": texts[-1]})
                posted = Posted(speaker, "text")
            else:
                transcript.other_chat(speaker)
                posted = Posted(speaker, "other")
        return self._end.after([posted]) is not None


class TeamTurn:
    """One turn of a team: its agents and workflow, new, over the state the session kept."""

    def __init__(self, engine: "Engine", turn: TurnInput, stream_text: bool) -> None:
        self._engine = engine
        self._turn = turn
        self._stream_text = stream_text

    async def run(self) -> AsyncIterator[TurnEvent]:
        engine, turn, lineup = self._engine, self._turn, self._engine.lineup
        usage = TurnUsage()
        current_usage.set(usage)
        names = engine.names
        awaiting = turn.awaiting
        resume_at = awaiting.agent if awaiting is not None else None
        if turn.state is not None:
            saved = SavedTeam.from_saved(turn.state, names)
        else:
            # No state, or the other engine's: each agent hears the transcript, and the agent
            # that paused calls (under the other engine) has them, as this engine pauses them.
            paused = awaiting.calls if awaiting is not None else ()
            saved = SavedTeam(
                {
                    name: transcript_session(turn.history, paused if name == resume_at else ())
                    for name in names
                },
                [],
                names[0],
            )
        first = resume_at or saved.next_speaker
        settled: list[InnerMessage] = []
        text = turn.newest
        if turn.approvals:
            async for event in engine.decide(turn, settled, saved.sessions.__getitem__):
                yield event
            assert turn.awaiting is not None
            text = decisions_text(turn.approvals, turn.awaiting)
        assert text is not None
        inputs = [Message(role="user", contents=[Content.from_text(text)])]
        transcript = engine.transcript(turn, settled)
        events: asyncio.Queue[TurnEvent] = asyncio.Queue()
        state = TurnState(
            agent=first,
            member=lineup.members[first],
            transcript=transcript,
            emit=events.put_nowait,
            payload_logging=engine.settings.payload_logging,
        )
        current_turn.set(state)
        speakers = _Speakers(engine, state, saved, resume_at, self._trimmed_thread)
        end = TurnEnd(lineup.replier, lineup.limits, usage)
        executors = [
            AgentExecutor(engine.team_agent(name), session=saved.sessions[name]) for name in names
        ]
        workflow = GroupChatBuilder(
            participants=executors,
            selection_func=speakers.choose,
            termination_condition=_TurnEndCheck(end, state, saved.thread),
            output_from="all",
        ).build()
        with engine.instrumentation.agent_run():
            try:
                async for event in events_while(
                    self._play(workflow, inputs, transcript, events), events
                ):
                    yield event
            except Exception as error:
                # An agent's failed model call, as the workflow passes it on: answered as the
                # model's error, unless it ends the turn as a limit would (a budget spent).
                failure = usage.model_failure
                if failure is None or not end.ends_at(failure):
                    if failure is None or failure is error:
                        raise
                    raise failure from error

        async def save_state() -> dict[str, Any]:
            for executor in executors:
                # What the agent was sent since it last spoke, which it has not heard yet.
                unheard = (await executor.on_checkpoint_save()).get("cache") or []
                session = saved.sessions[executor.id]
                history = session.state.setdefault(HISTORY_SOURCE, {"messages": []})
                history["messages"] = self._trimmed(
                    [*history["messages"], *heard_by(executor.id, unheard)]
                )
            saved.thread = self._trimmed_thread(saved.thread)
            saved.next_speaker = speakers.next_speaker()
            saved.last_speaker = speakers.last
            return saved.to_dict()

        yield await turn_result(
            transcript,
            lineup,
            engine=engine.name,
            limit_reason=end.reason,
            usage=usage,
            keep_state=turn.keep_state,
            save_state=save_state,
        )

    async def _play(
        self,
        workflow: Workflow,
        inputs: list[Message],
        transcript: Transcript,
        events: "asyncio.Queue[TurnEvent]",
    ) -> None:
        if not self._stream_text:
            await workflow.run(inputs)
            return
        async for event in workflow.run(inputs, stream=True):
            data, source = event.data, event.executor_id
            if event.type != "output" or source not in self._engine.names:
                continue
            if isinstance(data, AgentResponseUpdate) and data.text:
                for delta in transcript.text_delta(source, data.text):
                    events.put_nowait(delta)

    def _trimmed(self, messages: list[Message]) -> list[Message]:
        """An agent's history as kept: within the history budget by whole turns, without
        what the compaction excluded, which Agent Framework would keep in the session."""
        kept = [m for m in messages if not m.additional_properties.get(EXCLUDED_KEY)]
        count = self._engine.count_tokens
        costs = [message_tokens(count, message_text(message)) for message in kept]
        trim = trim_to_budget(costs, [starts_turn_of(m) for m in kept], self._engine.history_budget)
        return kept[trim.first_kept :]

    def _trimmed_thread(self, thread: list[dict[str, str]]) -> list[dict[str, str]]:
        count = self._engine.count_tokens
        costs = [message_tokens(count, entry["content"]) for entry in thread]
        starts = [entry["source"] == USER for entry in thread]
        return thread[trim_to_budget(costs, starts, self._engine.history_budget).first_kept :]
