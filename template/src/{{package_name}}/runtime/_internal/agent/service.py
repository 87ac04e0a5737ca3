"""What one chat turn does, around the agent: its conversation, deadline, error mapping,
usage accounting."""

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

import structlog

from ..context import bind, current_caller, current_request_id
from ..contract import (
    Approval,
    ChatRequest,
    ChatResponse,
    PendingToolCall,
    TurnMessage,
    TurnStatus,
    Usage,
)
from ..errors import ApiError, internal_error, upstream_error
from ..project import ENV_PREFIX
from ..settings import ConfigurationError, CoreSettings
from .approvals import arguments_problem
from .conversation import Awaiting, Conversation, Conversations, DisconnectCheck, SavedState
from .engine import Engine
from .mcp_client import McpServer, McpToolSchema
from .tokens import TokenCounter, message_tokens
from .turn import (
    FrontendInput,
    InnerMessage,
    ModelCallRefused,
    StateRefused,
    TextDelta,
    TurnEvent,
    TurnInput,
    TurnResult,
    UnusableAnswer,
)
from .upstream import hanging_up_answers

log = structlog.get_logger(__name__)


async def never_disconnected() -> bool:
    """The disconnect check of a turn that outlives any connection (an A2A task, a run)."""
    return False


DISCONNECT_POLL_SECONDS = 0.25


def client_disconnected() -> ApiError:
    return ApiError(499, "client_disconnected", "The client closed the request.")


def deadline_exceeded() -> ApiError:
    return ApiError(504, "deadline_exceeded", "The turn took longer than allowed.")


def history_budget(settings: CoreSettings, agent_name: str, overhead: int) -> int:
    """Tokens left for an agent's conversation once its prompt and tool schemas (`overhead`)
    and the reply are reserved."""
    budget = settings.history_max_tokens - overhead - settings.reply_reserve_tokens
    if budget < 256:
        raise ConfigurationError(
            f"Invalid configuration: {ENV_PREFIX}HISTORY_MAX_TOKENS={settings.history_max_tokens} "
            f"leaves {budget} tokens for the conversation of agent {agent_name!r} after its "
            f"system prompt and tool schemas ({overhead}) and the reply reserve "
            f"({settings.reply_reserve_tokens}); raise it or lower the reply reserve"
        )
    return budget


class ChatService:
    """Answers chat turns. Holds only what is safe to share: settings, the engine."""

    def __init__(self, settings: CoreSettings, engine: Engine, count_tokens: TokenCounter) -> None:
        self.settings = settings
        self._engine = engine
        self.count_tokens = count_tokens
        # A lone agent's streamed text is its reply; a team's is every agent's in turn.
        self.streams_only_the_reply = engine.kind == "single"
        self.runs_in_flight = 0

    @property
    def history_budget(self) -> int:
        """Tokens of conversation every agent can be sent."""
        return self._engine.history_budget

    @property
    def tool_descriptions(self) -> dict[str, str]:
        """What each tool the agents may call does, by name."""
        return self._engine.tool_descriptions

    @property
    def agent_descriptions(self) -> dict[str, str]:
        """What each agent that has a description does, by name."""
        return self._engine.agent_descriptions

    @property
    def tool_names(self) -> frozenset[str]:
        """Every tool name a model of the service is offered, handoffs included."""
        return self._engine.tool_names

    def add_tools(self, server: McpServer, schemas: Sequence[McpToolSchema]) -> None:
        """Give every agent an MCP server's tools as well, before the first turn."""
        self._engine.add_tools(server, schemas)

    def check_limits(self, request: ChatRequest) -> None:
        """Limits that depend on settings; the request model checks the rest."""
        limits = self.settings
        if len(request.messages) > limits.request_max_messages:
            raise ApiError(
                422,
                "invalid_request",
                f"messages: {len(request.messages)} messages, more than the limit of "
                f"{limits.request_max_messages}",
            )
        for index, message in enumerate(request.messages):
            if len(message.content) > limits.request_max_message_chars:
                raise ApiError(
                    422,
                    "invalid_request",
                    f"messages.{index}.content: {len(message.content)} characters, more than "
                    f"the limit of {limits.request_max_message_chars}",
                )
        if not request.messages:
            return  # approvals only
        newest = message_tokens(self.count_tokens, request.messages[-1].content)
        if newest > self.history_budget:
            raise ApiError(
                413,
                "input_too_long",
                f"messages.{len(request.messages) - 1}.content: the newest message needs about "
                f"{newest} tokens, more than the {self.history_budget} this service can send",
            )

    async def begin(
        self,
        request: ChatRequest,
        conversations: Conversations,
        is_disconnected: DisconnectCheck,
        *,
        stream_text: bool,
        frontend: FrontendInput | None = None,
    ) -> "ChatTurn":
        """Begin answering `request`: take hold of its conversation and start the run."""
        self.check_limits(request)
        self._check_capacity()  # before a wait for the session, which a full service wastes
        # The deadline counts from here: a wait for the session is part of the turn.
        deadline = asyncio.get_running_loop().time() + self.settings.request_deadline_seconds
        conversation = await conversations.begin(
            current_caller(), request, deadline=deadline, is_disconnected=is_disconnected
        )
        try:
            turn = self._turn_input(request, conversation, frontend or FrontendInput())
            run = self._start_run(turn, conversation, is_disconnected, stream_text, deadline)
        except BaseException:
            await conversation.release()
            raise
        return ChatTurn(self, conversation, run)

    async def stream(
        self,
        request: ChatRequest,
        conversations: Conversations,
        is_disconnected: DisconnectCheck,
        frontend: FrontendInput | None = None,
    ) -> AsyncIterator[TurnEvent | ChatResponse | ApiError]:
        """The turn's events as they come, then its response, or the error that ended it.

        The turn has begun and produced its first event when this returns: a turn that
        fails before producing anything (a rate limit, an unreachable model, a full
        service, a busy session) raises here, in time for an honest HTTP status; a failure
        after that is the last item. The turn is closed before the last item, which the
        client may answer at once with its next turn.
        """
        turn = await self.begin(
            request, conversations, is_disconnected, stream_text=True, frontend=frontend
        )
        try:
            first = await turn.next_event()
        except BaseException:
            await turn.close()
            raise
        return turn.rest(first)

    async def answer(
        self,
        request: ChatRequest,
        conversations: Conversations,
        is_disconnected: DisconnectCheck,
    ) -> ChatResponse:
        """The whole turn at once: what `/v1/chat` answers."""
        turn = await self.begin(request, conversations, is_disconnected, stream_text=False)
        try:
            while not isinstance(event := await turn.next_event(), ChatResponse):
                pass
        finally:
            await turn.close()
        return event

    def _awaiting(self, state: SavedState | None) -> Awaiting | None:
        """What a conversation with this saved state waits for; 409 if this service cannot
        go on from it."""
        try:
            return self._engine.awaiting(state)
        except StateRefused as error:
            raise ApiError(409, error.type, str(error)) from error

    def waits_for(self, state: SavedState | None) -> tuple[TurnStatus, list[PendingToolCall]]:
        """What a conversation with this saved state waits for, and the calls to decide."""
        awaiting = self._awaiting(state)
        if awaiting is None:
            return "completed", []
        if awaiting.kind == "input":
            return "awaiting_input", []
        calls = awaiting.calls
        status: TurnStatus = (
            "awaiting_approval" if awaiting.kind == "approval" else "awaiting_frontend_tools"
        )
        return status, [PendingToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls]

    def _turn_input(
        self, request: ChatRequest, conversation: Conversation, frontend: FrontendInput
    ) -> TurnInput:
        """What the turn starts from; 409 or 422 when the session cannot go on with it."""
        awaiting = self._awaiting(conversation.state)
        if frontend.held_calls and not conversation.keeps_state:
            held_by = frontend.held_by if frontend.held_by in self._engine.names else None
            awaiting = Awaiting(
                kind="frontend_tools",
                agent=held_by or self._engine.names[0],
                calls=tuple(frontend.held_calls),
            )
        self._check_frontend_results(frontend, awaiting)
        pending = [
            call.id for call in (awaiting.calls if awaiting and awaiting.kind == "approval" else ())
        ]
        if request.approvals is not None:
            if not pending:
                raise ApiError(
                    409,
                    "nothing_pending",
                    "approvals: no tool call of this session waits for approval; send "
                    "messages instead",
                )
            decided = [approval.id for approval in request.approvals]
            unknown = [call_id for call_id in decided if call_id not in pending]
            missing = [call_id for call_id in pending if call_id not in decided]
            if unknown or missing:
                problem = (
                    f"no pending call has id {', '.join(unknown)}"
                    if unknown
                    else f"decide every pending call; missing {', '.join(missing)}"
                )
                raise ApiError(
                    422,
                    "invalid_request",
                    f"approvals: {problem} (pending: {', '.join(pending)})",
                )
            assert awaiting is not None  # there are pending calls
            self._check_edits(request.approvals, awaiting)
        elif pending:
            raise ApiError(
                409,
                "approval_pending",
                "This session waits for decisions on tool calls before it can go on: send "
                f"`approvals` for {', '.join(pending)} (see `pending_tool_calls`).",
            )
        messages = request.messages
        state = conversation.state
        if state is not None and state.engine != self._engine.name:
            # Another engine's own part is not this one's to read: it goes on from the
            # transcript, at the agent that asked and with the calls it paused, if any.
            state = None
        # A turn that carries frontend results has no new message: all are history.
        earlier = messages if frontend.results else messages[:-1]
        return TurnInput(
            history=[*conversation.history, *earlier],
            newest=messages[-1].content if messages and not frontend.results else None,
            state=state,
            awaiting=awaiting,
            keep_state=conversation.keeps_state,
            approvals=request.approvals or frontend.results,
            frontend_tools=frontend.tools,
            context=frontend.context,
        )

    def _check_frontend_results(self, frontend: FrontendInput, awaiting: Awaiting | None) -> None:
        """409 or 422 unless the turn's frontend results answer the calls the conversation
        left to its client, each once: the calls stay waiting for results that fit."""
        waiting = [
            call.id
            for call in (awaiting.calls if awaiting and awaiting.kind == "frontend_tools" else ())
        ]
        if not frontend.results:
            if waiting:
                raise ApiError(
                    409,
                    "frontend_tools_pending",
                    "This conversation waits for the results of the frontend tools its agent "
                    f"called: send a `tool` message for each of {', '.join(waiting)}.",
                )
            return
        if not waiting:
            raise ApiError(
                409,
                "nothing_pending",
                "messages: no frontend tool call of this conversation waits for a result; "
                "end the messages with the user's new one instead",
            )
        answered = [result.id for result in frontend.results]
        unknown = [call_id for call_id in answered if call_id not in waiting]
        missing = [call_id for call_id in waiting if call_id not in answered]
        if unknown or missing or len(set(answered)) != len(answered):
            problem = (
                f"no frontend tool call waits for a result with id {', '.join(unknown)}"
                if unknown
                else f"send one result for every call; missing {', '.join(missing)}"
                if missing
                else "send one result for every call, once"
            )
            raise ApiError(
                422, "invalid_request", f"messages: {problem} (waiting: {', '.join(waiting)})"
            )

    def _check_edits(self, approvals: Sequence[Approval], awaiting: Awaiting) -> None:
        """422 for edited arguments that the call's tool does not take, or that are no JSON
        object: the calls stay pending, for a decision that can be carried out."""
        names = {call.id: call.name for call in awaiting.calls}
        for index, approval in enumerate(approvals):
            if approval.arguments is None:
                continue
            field = f"approvals.{index}.arguments"
            name = names[approval.id]
            if not self._engine.accepts_edits(awaiting.agent, name):
                raise ApiError(
                    422,
                    "invalid_request",
                    f"{field}: the arguments of {name} cannot be edited; approve the call as "
                    "the model made it, or reject it with a reason",
                )
            if (problem := arguments_problem(approval.arguments)) is not None:
                raise ApiError(422, "invalid_request", f"{field}: {problem}")

    def response(self, turn: TurnResult) -> ChatResponse:
        status: TurnStatus = "completed"
        if turn.stop_reason in ("awaiting_input", "awaiting_approval", "awaiting_frontend_tools"):
            status = turn.stop_reason
        answered = turn.stop_reason in ("reply", "max_tool_rounds", "awaiting_input")
        if answered and not turn.reply.strip():
            raise ApiError(502, "upstream_empty_reply", "The model answered with no text.")
        self.check_reply_length(len(turn.reply))
        bind(
            prompt_tokens=turn.prompt_tokens,
            completion_tokens=turn.completion_tokens,
            tool_calls=turn.tool_calls,
            stop_reason=turn.stop_reason,
        )
        return ChatResponse(
            reply=turn.reply,
            status=status,
            stop_reason=turn.stop_reason,
            request_id=current_request_id(),
            provider=self.settings.model_provider,
            model=self.settings.model_label,
            usage=Usage(prompt_tokens=turn.prompt_tokens, completion_tokens=turn.completion_tokens),
            tool_calls=turn.tool_calls,
            messages=[self._turn_message(message) for message in turn.messages],
            pending_tool_calls=[
                PendingToolCall(id=call.id, name=call.name, arguments=call.arguments)
                for call in turn.pending
            ],
        )

    def _turn_message(self, message: InnerMessage) -> TurnMessage:
        hidden = message.type in ("tool_call", "tool_result") and not (
            self.settings.response_tool_details
        )
        return TurnMessage(
            source=message.source,
            type=message.type,
            content=None if hidden else message.content,
            name=message.name,
            call_id=message.call_id,
            is_error=message.is_error,
        )

    def check_reply_length(self, chars: int) -> None:
        """A bound on what the model may send back, which a client is then sent and a
        session stores: a runaway or hostile upstream must not fill memory or Redis."""
        if chars > self.settings.reply_max_chars:
            log.warning("model reply too long", chars=chars, limit=self.settings.reply_max_chars)
            raise ApiError(
                502,
                "upstream_bad_answer",
                f"The model's reply is longer than the {self.settings.reply_max_chars} "
                "characters this service accepts.",
            )

    def _run_ended(self) -> None:
        self.runs_in_flight -= 1

    def _check_capacity(self) -> None:
        if self.runs_in_flight >= self.settings.max_concurrent_runs:
            raise ApiError(
                503,
                "overloaded",
                "The service is answering as many turns as it can; retry shortly.",
                {"Retry-After": "1"},
            )

    def _start_run(
        self,
        turn: TurnInput,
        conversation: Conversation,
        is_disconnected: DisconnectCheck,
        stream_text: bool,
        deadline: float,
    ) -> "AgentRun":
        self._check_capacity()  # again: other turns may have started while this one waited
        self.runs_in_flight += 1
        events = self._engine.run(turn, stream_text=stream_text)
        # The slot is held until the run really ends, so abandoned runs still count.
        return AgentRun(
            events,
            self._engine,
            deadline=deadline,
            is_disconnected=is_disconnected,
            interruption=conversation.interruption,
            on_end=self._run_ended,
        )


class ChatTurn:
    """A chat request being answered, bound to the conversation it continues.

    `next_event` gives the run's events and, last, the response, once the turn is
    committed to its conversation; `close` ends the run if it is still going and
    releases the conversation. Every endpoint answers a turn through this class.
    """

    def __init__(self, service: ChatService, conversation: Conversation, run: "AgentRun") -> None:
        self._service = service
        self._conversation = conversation
        self._run = run
        self._streamed_chars = 0

    async def next_event(self) -> TurnEvent | ChatResponse:
        event = await self._run.next_event()
        if isinstance(event, TextDelta):
            self._streamed_chars += len(event.text)
            self._service.check_reply_length(self._streamed_chars)
        if not isinstance(event, TurnResult):
            return event
        response = self._service.response(event)
        # Committed before the response is returned, so a response means a saved turn.
        # A pause for approval, or a limit reached before any agent wrote, adds no reply to
        # the conversation: a later turn will.
        paused = response.status in ("awaiting_approval", "awaiting_frontend_tools")
        reply = None if paused or not response.reply.strip() else response.reply
        await self._conversation.commit(reply, event.state)
        return response

    async def close(self) -> None:
        self._run.close()
        await self._conversation.release()

    async def rest(
        self, first: TurnEvent | ChatResponse
    ) -> AsyncIterator[TurnEvent | ChatResponse | ApiError]:
        """`first`, the events after it, and the response or the error that ended the turn."""
        try:
            event = first
            while not isinstance(event, ChatResponse):
                yield event
                event = await self.next_event()
            # Committed by now: the response means saved.
        except ApiError as error:
            failure = error
        except Exception:
            log.exception("unhandled error")
            failure = internal_error()
        else:
            failure = None
        finally:
            await self.close()
        yield event if failure is None else failure


class AgentRun:
    """One agent run, read event by event until it ends, the deadline passes, the client
    goes away or a newer turn interrupts it.

    The run is a task of its own that is waited on, never awaited: a run that ignores
    cancellation (a stuck tool, say) cannot hold the request past its deadline, though
    it keeps its concurrency slot until it ends. A tool that blocks the event loop stalls
    everything: async tools must await, blocking code belongs in sync tools (run in threads).

    The run is its only task: the deadline is a timer, the interruption a callback, and the
    client is watched by a task only once a turn has lasted `DISCONNECT_POLL_SECONDS`, so
    that a quick turn pays no task beyond its run's.
    """

    def __init__(
        self,
        events: AsyncIterator[TurnEvent],
        engine: Engine,
        *,
        deadline: float,
        is_disconnected: DisconnectCheck,
        interruption: "asyncio.Future[ApiError] | None",
        on_end: Callable[[], None],
    ) -> None:
        loop = asyncio.get_running_loop()
        self._engine = engine
        self._is_disconnected = is_disconnected
        self._interruption = interruption
        self._on_end = on_end
        self._events: deque[TurnEvent] = deque()
        self._stopped: ApiError | None = None
        self._reader: asyncio.Future[None] | None = None
        self._deadline = loop.call_at(deadline, self._deadline_passed)
        self._client_check = loop.call_later(DISCONNECT_POLL_SECONDS, self._watch_client)
        self._client_watch: asyncio.Task[None] | None = None
        if interruption is not None:
            interruption.add_done_callback(self._interrupted)
        self._run = asyncio.create_task(self._forward(events))
        self._run.add_done_callback(self._ended)

    async def _forward(self, events: AsyncIterator[TurnEvent]) -> None:
        async with hanging_up_answers():
            async for event in events:
                self._events.append(event)
                self._wake_reader()

    async def next_event(self) -> TurnEvent:
        """The run's next event; `ApiError` when it failed, timed out, lost its client or
        was interrupted."""
        while not self._events:
            if self._run.done():
                raise _run_failure(self._run, self._engine)
            if self._stopped is not None:
                raise self._stopped
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return self._events.popleft()

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _stop(self, error: ApiError) -> None:
        if self._stopped is None:
            self._stopped = error
            self._wake_reader()

    def _deadline_passed(self) -> None:
        self._stop(deadline_exceeded())

    def _interrupted(self, interruption: "asyncio.Future[ApiError]") -> None:
        if not interruption.cancelled():
            self._stop(interruption.result())

    def _watch_client(self) -> None:
        self._client_watch = asyncio.create_task(self._poll_client())

    async def _poll_client(self) -> None:
        # Polling: Starlette offers no event for a client that has gone away.
        try:
            while True:
                if await self._is_disconnected():
                    log.info("client disconnected: run cancelled")
                    self._stop(client_disconnected())
                    return
                await asyncio.sleep(DISCONNECT_POLL_SECONDS)
        except Exception as failure:
            log.error("disconnect check failed", exc_info=failure)
            self._stop(internal_error())

    def _stop_watching(self) -> None:
        self._deadline.cancel()
        self._client_check.cancel()
        if self._client_watch is not None:
            self._client_watch.cancel()
        if self._interruption is not None:
            self._interruption.remove_done_callback(self._interrupted)

    def _ended(self, _: "asyncio.Task[None]") -> None:
        # Nothing is left to watch for: stopped here too, since a turn whose stream the web
        # framework abandons is closed by the garbage collector, which would otherwise find
        # the client's watch pending.
        self._stop_watching()
        self._on_end()
        self._wake_reader()

    def close(self) -> None:
        """Stop watching the client, the clock and the conversation and, if the run has not
        ended, cancel it."""
        self._stop_watching()
        if not self._run.done():
            self._run.cancel()  # the engine stops the turn, its model call included
            self._run.add_done_callback(_retrieve_outcome)


def _run_failure(run: "asyncio.Task[None]", engine: Engine) -> Exception:
    """What a run that ended without its result raised, as the error to answer with."""
    error = run.exception()
    if error is None:  # an engine always ends a run with its result; this is a bug
        return RuntimeError("the agent run ended without a result")
    if isinstance(error, StateRefused):
        return ApiError(409, error.type, str(error))
    cause = engine.upstream_cause(error)
    if isinstance(cause, ModelCallRefused):
        retry_after = cause.retry_after_seconds
        headers = None if retry_after is None else {"Retry-After": str(retry_after)}
        return ApiError(cause.status, cause.type, cause.message, headers)
    if isinstance(cause, UnusableAnswer):
        log.warning("model answer unusable", exc_info=error)
        return ApiError(
            502, "upstream_bad_answer", "The model gave an answer the service cannot use."
        )
    if isinstance(cause, Exception):
        log.warning("model call failed", exc_info=error)
        return upstream_error(cause)
    return error


def _retrieve_outcome(run: "asyncio.Task[None]") -> None:
    """Collect an abandoned run's end, so it is not reported as never retrieved."""
    if not run.cancelled() and run.exception() is not None:
        log.info("abandoned run ended with an error", error=type(run.exception()).__name__)
