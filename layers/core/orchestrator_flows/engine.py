"""One turn of a call: claim the session, check the intent against the stage, call the agent,
record the step and advance the stage when the agent completed its work (DESIGN §3, §9)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from orchestrator_flows.a2a.messages import AgentReply, AgentRequest
from orchestrator_flows.breaker import Breakers, Decision
from orchestrator_flows.errors import (
    AccountMismatch,
    AgentFailure,
    ClaimLost,
    FailureCode,
    SessionComplete,
    SessionEscalated,
    StepLimitReached,
    StoreUnavailable,
    UnstorableStep,
)
from orchestrator_flows.escalation import handoff
from orchestrator_flows.flow import Agent, Flow, Route, Stage
from orchestrator_flows.masking import Masker
from orchestrator_flows.observer import Observer
from orchestrator_flows.records import (
    AgentResponse,
    Candidate,
    IntentSource,
    Status,
    Step,
    TurnResponse,
    dump_json,
    load_answer,
    load_steps,
    session_state,
)
from orchestrator_flows.session import HandoffReason, Session, TaskRef, utc_now
from orchestrator_flows.store import Claim, Idempotency, Replay, SessionStore
from orchestrator_flows.transitions import END, ESCALATION, Outcome

logger = logging.getLogger(__name__)


class AgentCaller(Protocol):
    async def send(self, request: AgentRequest) -> AgentReply: ...


@dataclass(frozen=True)
class Turn:
    call_identify_id: str
    account_id: str
    eci: str
    input_message: str
    intent: str | None  # None: read from the caller's words
    locale: str | None = None  # of the caller's words (None: the flow's)

    @cached_property
    def fingerprint(self) -> str:
        """What makes two requests the same turn, for an Idempotency-Key (and its A2A
        messageId): computed once a turn."""
        fields: list[str | None] = [self.call_identify_id, self.account_id, self.eci,
                                    self.input_message, self.intent]
        if self.locale is not None:
            fields.append(self.locale)
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Reading:
    """How a turn's intent was found: `caller` (the request said it), `continuation` (a short
    follow-up to its stage's open task), `classifier` (from the caller's words); `intent` None:
    the classifier abstained (the turn answers `clarify` with the `candidates`)."""

    intent: str | None
    source: IntentSource
    confidence: float | None = None
    candidates: tuple[Candidate, ...] = ()
    spent_seconds: float = 0.0  # of the step's agent deadline, by a classifier agent


# What the routing log and metrics name as the agent of a turn that hands the call over, and of
# one whose words could not be read.
HANDOFF_AGENT = "handoff"
CLARIFY_AGENT = "clarify"
# uuid5 namespace of the A2A messageIds the orchestrator sends.
MESSAGE_IDS = uuid.UUID("6f0c8e1e-3b52-5d2a-9f4e-1c7a2b9d8e30")


def message_id(turn: Turn, idempotency_key: str | None, session: Session) -> str:
    """The A2A messageId of a turn, the same for every retry of it whatever path the retry
    takes (after claim_lost, a 503, a timeout), so an agent can tell a repeat from a new
    request: from the call and its Idempotency-Key, or without one from the call and the step
    the turn would be; and from what the turn says, so that another turn sent under the same
    key or at the same step is another message."""
    turn_of_call = (f"key\n{idempotency_key}" if idempotency_key is not None
                    else f"step\n{session.step_count + 1}")
    name = f"{turn.call_identify_id}\n{turn_of_call}\n{turn.fingerprint}"
    return _uuid5(name)


_MESSAGE_IDS_BYTES = MESSAGE_IDS.bytes


def _uuid5(name: str) -> str:
    """`str(uuid.uuid5(MESSAGE_IDS, name))` without building a UUID object (a third of the
    cost): SHA-1 of the namespace and the name, version 5 and the RFC 4122 variant set."""
    digest = bytearray(hashlib.sha1(_MESSAGE_IDS_BYTES + name.encode()).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50
    digest[8] = digest[8] & 0x3F | 0x80
    hexed = digest.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What the agent call came to, before masking: the agent's part of the step, and the
    reply or failure it was made from."""

    status: Status
    response: AgentResponse
    reply: AgentReply | None
    failure: AgentFailure | None
    version: str | None
    # Several agents called at once: each one's outcome, in the route's order (this outcome
    # then is their combination, by the route's rule).
    parts: tuple[_Outcome, ...] = ()


class Orchestrator:
    def __init__(
        self, *, flow: Flow, store: SessionStore, agents: AgentCaller, breakers: Breakers,
        observer: Observer, max_steps: int, turn_wait_seconds: float = 0.0,
        agent_timeout_seconds: float | None = None,
    ) -> None:
        self.flow = flow
        self.store = store
        self.agents = agents
        self.breakers = breakers
        self.observer = observer
        self.max_steps = max_steps
        # How long a turn waits for one of its call in flight (TURN_WAIT_SECONDS).
        self.turn_wait_seconds = turn_wait_seconds
        # The step's agent deadline (the client's): what a classifier agent takes of it, the
        # turn's agent does not have.
        self.agent_timeout_seconds = agent_timeout_seconds
        self._probes: set[asyncio.Future[AgentReply]] = set()  # half-open probes running on

    async def handle_turn(
        self, turn: Turn, idempotency_key: str | None = None, wait_seconds: float | None = None
    ) -> TurnResponse:
        """One turn. With an Idempotency-Key, a turn already answered under it gets that answer
        again (no agent call, no step); the same key with another body is refused. A turn that
        finds another of its call in flight waits its turn up to `wait_seconds` (default
        `turn_wait_seconds`)."""
        return (await self._handle(turn, idempotency_key, wait_seconds))[0]

    async def handle_turn_json(self, turn: Turn, idempotency_key: str | None = None,
                               wait_seconds: float | None = None) -> bytes:
        """`handle_turn`'s answer as the API sends it: a keyed turn's answer was encoded once
        already, to be stored under its key, and that encoding is sent."""
        answer, encoded = await self._handle(turn, idempotency_key, wait_seconds)
        return encoded.encode() if encoded is not None else dump_json(answer)

    async def _handle(
        self, turn: Turn, idempotency_key: str | None, wait_seconds: float | None
    ) -> tuple[TurnResponse, str | None]:
        started = time.perf_counter()
        observe = self.observer
        idempotency = (Idempotency(idempotency_key, turn.fingerprint)
                       if idempotency_key is not None else None)
        likely_agent = self.flow.agent_for(turn.intent) if turn.intent is not None else None
        async with observe.span("claim", call_identify_id=turn.call_identify_id):
            # The agent's breaker is looked at alongside the claim (when this instance's view of
            # it has lapsed), so it costs no round trip of its own.
            looking = (asyncio.ensure_future(self.breakers.refresh(
                likely_agent.name, likely_agent.breaker))
                if likely_agent is not None
                and self.breakers.stale(likely_agent.name, likely_agent.breaker) else None)
            try:
                claim = await self.store.claim(
                    turn.call_identify_id, idempotency,
                    self.turn_wait_seconds if wait_seconds is None else wait_seconds)
            except BaseException:
                if looking is not None:
                    looking.cancel()
                raise
        if isinstance(claim, Replay):
            if looking is not None:
                await looking
            return _replayed(claim), None
        try:
            if looking is not None:
                await looking  # in the try: a turn cancelled here still releases its claim
            session = self._admit(turn, claim)
            stage = self.flow.stage(session.current_flow_id)
            sent_as = message_id(turn, idempotency_key, session)  # as the caller sent it
            hands_over = self.flow.escalation.asked_for(turn.intent, turn.input_message)
            # A caller asking for a person is not read further (a phrase is its reading).
            reading = (Reading(turn.intent, "caller" if turn.intent else "classifier")
                       if hands_over else await self._read(turn, session, stage, sent_as))
            if hands_over or reading.intent is None:
                # The caller asks for a person (the call is handed over), or their words could
                # not be read (they are asked to say it again): no agent is called.
                observe.turn_routed(turn.call_identify_id,
                                    self.flow.masker.mask(turn.intent or "", stage.name),
                                    stage.id, HANDOFF_AGENT if hands_over else CLARIFY_AGENT)
                async with observe.span("commit", call_identify_id=turn.call_identify_id):
                    result, advanced, encoded = await self._commit(
                        turn, claim, session.copy(), stage, None, None, reading, hands_over)
                reply_length = 0
            else:
                turn = dataclasses.replace(turn, intent=reading.intent)
                assert turn.intent is not None
                route = _on_version(self.flow.route(turn.intent, session.current_flow_id),
                                    session, turn.call_identify_id)
                observe.turn_routed(turn.call_identify_id,
                                    self.flow.masker.mask(turn.intent, route.stage.name),
                                    route.stage.id, route.agent.name)
                async with observe.span("agent", call_identify_id=turn.call_identify_id,
                                        agent=route.agent.name):
                    left = (None if not reading.spent_seconds or self.agent_timeout_seconds is None
                            else max(0.1, self.agent_timeout_seconds - reading.spent_seconds))
                    outcome = (await self._call_together(turn, session, route, sent_as, left)
                               if route.also else
                               await self._call_agent(turn, session, route, sent_as, left))
                for agent, part in zip(route.agents, outcome.parts or (outcome,), strict=True):
                    error = part.failure.code if part.failure else None
                    observe.agent_answered(agent.name, part.response.latency_ms, error,
                                           agent.version)
                async with observe.span("commit", call_identify_id=turn.call_identify_id):
                    result, advanced, encoded = await self._record(
                        turn, claim, session, route, outcome, reading)
                reply_length = len(outcome.response.text)
        except BaseException:
            # Refused, cancelled, a commit that failed, or a bug: whatever was not written, the
            # call is not left locked. The release is fenced by the claim's token, so it is a
            # no-op if the commit did land (its answer lost on the way).
            await self._release_quietly(claim)
            raise
        observe.turn_done(
            result.status,
            advanced=advanced,
            completed=result.is_complete,
            latency_ms=(time.perf_counter() - started) * 1000,
            input_length=len(turn.input_message),
            reply_length=reply_length,
        )
        return result, encoded

    async def _release_quietly(self, claim: Claim) -> None:
        # A release that fails must not hide the turn's own answer (a 4xx, say); the claim then
        # lapses with its lease.
        try:
            await self.store.release(claim)
        except StoreUnavailable:
            logger.warning("could not release claim on %s; it lapses with its lease",
                           claim.call_identify_id)

    async def _read(self, turn: Turn, session: Session, stage: Stage, sent_as: str
                    ) -> Reading:
        """The turn's intent: the caller's; else, for a short follow-up, the intent of the task
        its stage has open; else the flow's classifier agent's reading of the caller's words,
        or (without one, or when it fails) the offline classifier's, among the stage's
        intents, in the turn's locale (or its language, or the flow's)."""
        if turn.intent is not None:
            return Reading(turn.intent, "caller")
        flow = self.flow
        # The newest task the stage has open that its agent can go on with (tasks are kept in
        # the order they last asked).
        open_here = [(name, task) for name, task in session.open_tasks.items()
                     if _open_task(session, flow.agents[name], stage) is not None]
        limit = flow.follow_up_words
        if open_here and len(turn.input_message.split(None, limit)) <= limit:
            name, task = open_here[-1]
            intent = task.intent if task.intent in stage.intents else next(
                (served for served, serving in stage.intents.items() if serving == name), None)
            if intent is not None:
                return Reading(intent, "continuation")
        spent = 0.0
        if flow.classifier_agent is not None:
            read = await self._ask_classifier(turn, session, stage, sent_as)
            if read.source == "agent":
                return read
            spent = read.spent_seconds  # it failed: the offline classifier reads
        classifier = flow.classifier
        asked = turn.locale or flow.locale
        locale = next((name for name in (asked, asked.split("-")[0], flow.locale)
                       if classifier.knows(name, stage.intents)), flow.locale)
        verdict = classifier.classify(turn.input_message, locale, stage.intents)
        candidates = tuple(Candidate(intent=found.intent, score=found.score)
                           for found in verdict.candidates) or tuple(
            Candidate(intent=name, score=0.0) for name in stage.intents)
        return Reading(verdict.intent, "classifier", verdict.confidence,
                       candidates if verdict.intent is None else (), spent)

    async def _ask_classifier(self, turn: Turn, session: Session, stage: Stage,
                              sent_as: str) -> Reading:
        """The classifier agent's reading: its answer's data `{intent, confidence}`, the intent
        one of the stage's, the confidence (0–1, default 1) at the flow's threshold or above;
        else the turn is clarified. When the agent failed (its circuit open, a timeout), a
        reading of the classifier's own with no intent and the time it took: the offline
        classifier reads instead."""
        flow = self.flow
        assert flow.classifier_agent is not None
        agent = _version_of(flow.agents[flow.classifier_agent], session, turn.call_identify_id)
        started = time.perf_counter()
        request = AgentRequest(
            agent=agent, text=turn.input_message, context_id=session.context_id,
            metadata={"call_identify_id": turn.call_identify_id,
                      "account_id": session.account_id, "eci": turn.eci,
                      "intent_flow_id": stage.id, "flow_label": stage.name,
                      "purpose": "intent_classification",
                      "candidates": list(stage.intents),
                      "locale": turn.locale or flow.locale},
            message_id=_uuid5(f"{sent_as}\nclassify"),  # the same on every retry of the turn
            timeout_seconds=flow.classifier_timeout_seconds)
        try:
            reply = await self._send_through_breaker(request)
        except AgentFailure as failure:
            self.observer.agent_answered(agent.name, _since(started), failure.code,
                                         agent.version)
            return Reading(None, "classifier", spent_seconds=time.perf_counter() - started)
        spent = time.perf_counter() - started
        self.observer.agent_answered(agent.name, spent * 1000, None, agent.version)
        intent, confidence = reply.data.get("intent"), reply.data.get("confidence", 1.0)
        if (isinstance(intent, str) and intent in stage.intents
                and isinstance(confidence, int | float) and not isinstance(confidence, bool)
                and flow.classifier.threshold <= confidence <= 1):
            return Reading(intent, "agent", round(float(confidence), 4), spent_seconds=spent)
        return Reading(None, "agent", None, tuple(
            Candidate(intent=name, score=0.0) for name in stage.intents), spent_seconds=spent)

    def _admit(self, turn: Turn, claim: Claim) -> Session:
        """The call's session (a new one on its first turn), if it may take this turn."""
        session = claim.session
        if session is None:
            first = self.flow.stage(self.flow.first_stage_id)
            return Session(
                call_identify_id=turn.call_identify_id,
                account_id=turn.account_id,
                eci=turn.eci,
                context_id=f"ctx-{uuid.uuid4()}",
                current_flow_id=first.id,
                visits={first.id: 1} if first.max_visits is not None else {},
            )
        if session.account_id != turn.account_id:
            raise AccountMismatch(
                f"call {turn.call_identify_id} belongs to another account",
            )
        if session.is_complete:
            raise SessionComplete(f"call {turn.call_identify_id} is already complete")
        if session.handoff is not None:
            raise SessionEscalated(
                f"call {turn.call_identify_id} was handed to a person; it takes no more turns",
                queue=session.handoff.queue, reason=session.handoff.reason)
        if session.step_count >= self.max_steps:
            raise StepLimitReached(
                f"call {turn.call_identify_id} has reached its limit of {self.max_steps} steps",
                max_steps=self.max_steps)
        return session

    async def _call_agent(
        self, turn: Turn, session: Session, route: Route, message_id: str,
        timeout_seconds: float | None = None,
    ) -> _Outcome:
        agent, stage = route.agent, route.stage
        open_task = session.open_tasks.get(agent.name)
        if open_task is not None and (open_task.stage_id != stage.id
                                      or open_task.agent_version != agent.version):
            open_task = None  # a task of another stage, or of a version no longer configured
        request = AgentRequest(
            agent=agent,
            text=turn.input_message,
            metadata={
                "call_identify_id": turn.call_identify_id,
                "account_id": session.account_id,
                "eci": turn.eci,
                "intent": turn.intent,
                "intent_flow_id": stage.id,
                "flow_label": stage.name,
            },
            context_id=open_task.context_id if open_task else session.context_id,
            task_id=open_task.task_id if open_task else None,
            a2a_version=open_task.a2a_version if open_task else None,
            message_id=message_id,
            timeout_seconds=timeout_seconds,
        )
        started = time.perf_counter()
        try:
            reply = await self._send_through_breaker(request)
        except AgentFailure as failure:
            response = _failed(agent.name, failure, started)
            return _Outcome("error", response, None, failure, request.a2a_version)
        status: Status = "success" if reply.completed else "input_required"
        return _Outcome(status, _answered(agent.name, reply, started), reply, None,
                        reply.a2a_version)

    async def _call_together(
        self, turn: Turn, session: Session, route: Route, message_id: str,
        timeout_seconds: float | None = None,
    ) -> _Outcome:
        """The turn sent to each of the route's agents at once (each on its own task, breaker
        and version; each within the step's deadline), combined by the route's rule. With
        `first`, the others are no longer awaited once one completes."""
        agents = route.agents
        # One messageId per agent, the same on every retry of the turn.
        ids = [message_id, *(_uuid5(f"{message_id}\n{agent.name}") for agent in agents[1:])]
        calls = [asyncio.ensure_future(self._call_agent(
            turn, session, Route(agent, route.stage, False), sent_id, timeout_seconds))
            for agent, sent_id in zip(agents, ids, strict=True)]
        try:
            if route.succeed_when != "first":
                parts = list(await asyncio.gather(*calls))
            else:
                pending = set(calls)
                while pending and not any(
                        call.done() and _completed(call.result()) for call in calls):
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for call in pending:
                    call.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                parts = [call.result() if not call.cancelled() else _not_awaited(agent.name)
                         for call, agent in zip(calls, agents, strict=True)]
        finally:
            for call in calls:
                call.cancel()
        return _together(route, tuple(parts))

    async def _send_through_breaker(self, request: AgentRequest) -> AgentReply:
        """The agent call, unless its circuit is open (then agent_unavailable, no call); the
        outcome is told to the breaker."""
        agent = request.agent
        circuit = agent.breaker_key
        if self.breakers.stale(circuit, agent.breaker):
            # Not looked at beside the claim (an agent the turn's words or route chose, or a
            # version): looked at now, one round trip while this instance's view is old.
            await self.breakers.refresh(circuit, agent.breaker)
        decision = await self.breakers.admit(circuit, agent.breaker)  # or AgentUnavailable
        if decision == "probe":
            # The one probe of a half-open circuit must tell how it went even if this turn
            # stops awaiting it (`first`): it runs on, shielded, and reports.
            probing = asyncio.ensure_future(self._sent_and_reported(request, decision))
            self._probes.add(probing)
            probing.add_done_callback(self._probes.discard)
            return await asyncio.shield(probing)
        return await self._sent_and_reported(request, decision)

    async def _sent_and_reported(self, request: AgentRequest, decision: Decision
                                 ) -> AgentReply:
        agent = request.agent
        try:
            reply = await self.agents.send(request)
        except AgentFailure as failure:
            await self.breakers.report(agent.breaker_key, agent.breaker, decision, failure.code)
            raise
        await self.breakers.report(agent.breaker_key, agent.breaker, decision, None)
        return reply

    async def _record(
        self, turn: Turn, claim: Claim, session: Session, route: Route, outcome: _Outcome,
        reading: Reading,
    ) -> tuple[TurnResponse, bool, str | None]:
        """Commit the step; the turn's answer, whether the stage advanced, and the answer's JSON
        when it was encoded to be stored under an Idempotency-Key. An answer that
        cannot be stored and read back is recorded as what it is, a bad agent answer: no
        content can break a call (the A2A client refuses most such answers before this)."""
        try:
            return await self._commit(turn, claim, session.copy(), route.stage, route, outcome,
                                      reading)
        except UnstorableStep as unstorable:
            if outcome.parts:
                # Several agents: only the one(s) whose answer cannot be stored are bad; the
                # others' parts (their tasks, their answers) stand, and the rule decides again.
                stage, context = route.stage.name, session.context_id
                parts = tuple(part if _storable(part, self.flow.masker, stage, context)
                              else _unstorable(part, part.response.agent, "")
                              for part in outcome.parts)
                if parts != outcome.parts:
                    return await self._commit(turn, claim, session.copy(), route.stage, route,
                                              _together(route, parts), reading)
            bad = _unstorable(outcome, route.agent.name, str(unstorable))
            return await self._commit(turn, claim, session.copy(), route.stage, route, bad,
                                      reading)

    async def _commit(
        self, turn: Turn, claim: Claim, session: Session, stage: Stage, route: Route | None,
        outcome: _Outcome | None, reading: Reading, hands_over: bool = False,
    ) -> tuple[TurnResponse, bool, str | None]:
        """The step and the answer, built here and only here, then committed together. Without
        a route (and so no outcome) the caller asked for a person (`hands_over`: the call is
        handed over), or their words could not be read (clarify: an attempt at the stage)."""
        before = session.current_flow_id
        # What is stored (and so answered, and replayed) is masked; the agent had the original.
        masker = self.flow.masker
        said = masker.mask(turn.input_message, stage.name)
        session.step_count += 1
        status: Status
        if route is None or outcome is None:
            if hands_over:
                self._escalate(session, stage, "caller_request", None, said, None)
            else:
                tried = session.attempts[stage.id] = session.attempts.get(stage.id, 0) + 1
                if stage.max_attempts is not None and tried >= stage.max_attempts:
                    self._escalate(session, stage, "max_attempts", None, said, "clarify")
            advanced = False
            status = "escalated" if session.handoff is not None else (
                "escalated" if hands_over else "clarify")
        else:
            advanced = self._apply(session, route, outcome, said, turn.intent)
            status = "escalated" if session.handoff is not None else outcome.status
        response = (None if outcome is None else
                    _masked(outcome.response, masker, stage.name, session.context_id))
        parts = tuple(_masked(part.response, masker, stage.name, session.context_id)
                      for part in outcome.parts) if outcome is not None else ()
        intent = masker.mask(turn.intent, stage.name) if turn.intent is not None else None
        now = utc_now()
        session.updated_at = now
        agent = route.agent if route is not None else None
        handoff = session.handoff
        confidence = reading.confidence
        candidates = reading.candidates if status == "clarify" else ()
        step = Step(
            step_number=session.step_count,
            intent_flow_id=stage.id,
            intent=intent,
            input_message=said,
            agent=agent.name if agent is not None else None,
            a2a_agent_url=agent.url if agent is not None else None,
            a2a_version=outcome.version if outcome is not None else None,
            response_status=status,
            response_data=response,
            timestamp=now,
            agent_version=agent.version if agent is not None else None,
            handoff=handoff,
            intent_source=reading.source,
            confidence=confidence,
            parts=parts,
        )
        answer = TurnResponse(
            call_identify_id=turn.call_identify_id,
            intent_flow_id=stage.id,
            intent=intent,
            status=status,
            response=response,
            next_flow_id=None if session.is_over else session.current_flow_id,
            is_complete=session.is_complete,
            handoff=handoff,
            intent_source=reading.source,
            confidence=confidence,
            candidates=candidates,
            parts=parts,
        )
        try:
            # The reply kept for an Idempotency-Key holds no summary: a replay rebuilds it.
            reply = dump_json(answer).decode() if claim.idempotency is not None else None
            trail = await self.store.commit(claim, session, dump_json(step).decode(), reply)
        except ClaimLost as lost:
            # Nothing of the turn was written: the call is where it was before it.
            error = {"code": lost.code, "message": str(lost)}
            lost_response = (dataclasses.replace(response, error=error) if response is not None
                             else _nothing_called(error))
            return dataclasses.replace(
                answer, status="error", response=lost_response, next_flow_id=before,
                is_complete=False, handoff=None, parts=()), False, None
        if trail is not None:
            answer = dataclasses.replace(
                answer, session_summary=session_state(session, load_steps(trail)))
            reply = None  # what was stored holds no summary
        return answer, advanced, reply

    def _apply(self, session: Session, route: Route, outcome: _Outcome, said: str,
               intent: str | None) -> bool:
        """The flow rules: what a turn's outcome does to the session; True if the call moved
        to another stage or completed. A failed or input-required turn is an attempt at the
        stage; the stage's last one hands the call to a person. Otherwise the stage's
        transitions (`Flow.after`) say where the call goes; a fallback turn never moves it."""
        stage = route.stage
        parts = outcome.parts or (outcome,)
        # An agent asking again, on the task it asked on before, is an attempt; its first
        # question is not (it opens the task).
        asked_again = any(
            part.reply is not None and not part.reply.completed
            and _open_task(session, agent, stage) is not None
            for agent, part in zip(route.agents, parts, strict=False))
        for agent, part in zip(route.agents, parts, strict=False):
            if agent.version is not None:
                session.agent_versions[agent.name] = agent.version  # kept for the whole call
            if part.reply is not None and not part.reply.completed:
                # The task's intent, if it is one of the stage's (a fallback turn's is the
                # caller's free text): a follow-up without an intent continues it.
                self._keep_open_task(session, Route(agent, stage, route.is_fallback),
                                     part.reply, intent if intent in stage.intents else None)
            elif part.failure is not None:
                if not part.failure.code.keeps_task:
                    session.open_tasks.pop(agent.name, None)
            else:
                session.open_tasks.pop(agent.name, None)
        kind: Outcome = _KIND_OF[outcome.status]
        last = outcome.failure.code.value if outcome.failure is not None else kind
        if kind == "failed" or (kind == "input_required" and asked_again):
            tried = session.attempts[stage.id] = session.attempts.get(stage.id, 0) + 1
            if stage.max_attempts is not None and tried >= stage.max_attempts:
                self._escalate(session, stage, "max_attempts", None, said, last)
                return False
        if route.is_fallback:
            return False
        move = self.flow.after(stage, kind, outcome.response.data)
        if move is None:
            return False
        if kind == "completed":
            session.completed_flows.append(stage.id)
        if move.to == END:
            session.is_complete = True
            session.open_tasks = {}
            return True
        if move.to == ESCALATION:
            self._escalate(session, stage, "flow", move.queue, said, last)
            return False
        entered = self.flow.stage_named(move.to)
        if entered.id == stage.id and kind != "completed":
            return False  # a transition to its own stage on a failure: the call stays
        if entered.max_visits is not None:
            visits = session.visits.get(entered.id, 0) + 1
            if visits > entered.max_visits:
                self._escalate(session, stage, "max_visits", entered.queue, said, last,
                               f"the call came back to {entered.name} too often")
                return False
            session.visits[entered.id] = visits
        session.current_flow_id = entered.id
        # Tasks left open at the stage the call leaves can never be continued: a later visit
        # to it starts new ones.
        session.open_tasks = {}
        return True

    def _escalate(self, session: Session, stage: Stage, reason: HandoffReason,
                  queue: str | None, said: str, last: str | None, why: str | None = None
                  ) -> None:
        """The call, at `stage`, is handed to a person: to `queue`, else the stage's, else the
        flow's."""
        session.open_tasks = {}
        names = [self.flow.stage(done).name for done in session.completed_flows]
        session.handoff = handoff(session, reason,
                                  queue or stage.queue or self.flow.escalation.queue,
                                  stage.name, names, said, last, why)

    def _keep_open_task(self, session: Session, route: Route, reply: AgentReply,
                        intent: str | None) -> None:
        """A task waiting for the caller: the next turn at the stage continues it."""
        agent, stage = route.agent, route.stage
        task, context = reply.task_id, reply.context_id or session.context_id
        if task is None:
            return
        masker = self.flow.masker
        if (masker.mask(task, stage.name), masker.mask(context, stage.name)) != (task, context):
            # Ids that look like PII are never stored, so this task cannot be continued; nor
            # can an older one of the agent's.
            session.open_tasks.pop(agent.name, None)
            logger.warning("agent %s chose task or context ids that look like PII; the next "
                           "turn starts a new task", agent.name)
            return
        session.open_tasks.pop(agent.name, None)  # kept last: the newest question
        session.open_tasks[agent.name] = TaskRef(
            task_id=task, context_id=context, a2a_version=reply.a2a_version, stage_id=stage.id,
            agent_version=agent.version, intent=intent)

def _on_version(route: Route, session: Session, call_identify_id: str) -> Route:
    """The route with each of its agents as the version the call holds (`_version_of`)."""
    if not any(agent.versions for agent in route.agents):
        return route
    return dataclasses.replace(
        route, agent=_version_of(route.agent, session, call_identify_id),
        also=tuple(_version_of(agent, session, call_identify_id) for agent in route.also))


def _version_of(agent: Agent, session: Session, call_identify_id: str) -> Agent:
    """The agent as the version the call holds: the one its open task runs on, else the one it
    was given on its first turn to the agent, else one picked by weight now. A version no
    longer configured is replaced by a new pick (a drained one, weight 0, is kept)."""
    if not agent.versions:
        return agent
    task = session.open_tasks.get(agent.name)
    for held in (task.agent_version if task is not None else None,
                 session.agent_versions.get(agent.name)):
        if agent.holds(held):
            assert held is not None
            return agent.at(held)
    return agent.at(agent.pick(call_identify_id))


def _open_task(session: Session, agent: Agent, stage: Stage) -> TaskRef | None:
    """The agent's task open at this stage, that the agent (as it is now configured) can go
    on with: None for one of another stage, or on a version no longer configured."""
    task = session.open_tasks.get(agent.name)
    if task is None or task.stage_id != stage.id:
        return None
    if agent.versions and not agent.holds(task.agent_version):
        return None
    return task


# What is kept of an agent's answer: its text up to this many characters (about 3,000 words,
# far more than a turn says), its data up to this many bytes as JSON; masking then costs a
# bounded time whatever an agent sends (up to the client's 1 MiB).
MAX_KEPT_TEXT = 16_384
MAX_KEPT_DATA = 65_536
MAX_KEPT_MESSAGE = 512
# JSON-RPC's reserved error codes, A2A's among them: the protocol's, not the agent's, words.
_PROTOCOL_CODES = range(-32768, -31999)  # -32768 … -32000


def _masked(
    response: AgentResponse, masker: Masker, stage: str, own_context_id: str
) -> AgentResponse:
    """Everything of an agent's answer the agent chose — text, data (keys and numbers too),
    state, ids, error message — masked and bounded; what the orchestrator measured is kept.
    The call's own context id (ours, `ctx-` and a UUID) echoed back is not the agent's text:
    it is kept as it is rather than scanned by every rule on every step."""

    def text(value: Any, limit: int = MAX_KEPT_MESSAGE) -> Any:
        return masker.mask_shortened(value, stage, limit) if isinstance(value, str) else value

    data = response.data
    try:
        size = len(json.dumps(data, ensure_ascii=False, allow_nan=False)) if data else 0
    except ValueError as exc:  # NaN or Infinity: JSON cannot carry them
        raise UnstorableStep(str(exc)) from None
    error = response.error
    code = error.get("rpc_code") if error is not None else None
    if error is not None and isinstance(code, int) and code not in _PROTOCOL_CODES:
        # An agent's own error code is a number it chose: masked like one.
        error = {**error, "rpc_code": masker.mask_value(code, stage)}
    return AgentResponse(
        agent=response.agent,
        text=text(response.text, MAX_KEPT_TEXT),
        data=masker.mask_value(data, stage) if size <= MAX_KEPT_DATA else
        {"omitted": f"the agent's data was {size} bytes as JSON, over {MAX_KEPT_DATA}"},
        state=text(response.state),
        task_id=text(response.task_id),
        context_id=(own_context_id if response.context_id == own_context_id
                    else text(response.context_id)),
        error=None if error is None else {key: text(value) for key, value in error.items()},
        latency_ms=response.latency_ms,
        attempts=response.attempts)


def _unstorable(outcome: _Outcome, agent: str, why: str) -> _Outcome:
    """An answer that cannot be stored and read back, recorded as what it is: a bad answer."""
    failure = AgentFailure(FailureCode.BAD_RESPONSE,
                           f"agent {agent} answered what cannot be stored{': ' if why else ''}"
                           f"{why}")
    response = dataclasses.replace(
        outcome.response, text="", data={}, state=None, task_id=None, context_id=None,
        error=failure.to_json())
    return _Outcome("error", response, None, failure, outcome.version)


def _storable(part: _Outcome, masker: Masker, stage: str, context: str) -> bool:
    try:
        dump_json(_masked(part.response, masker, stage, context))
    except UnstorableStep:
        return False
    return True


def _completed(outcome: _Outcome) -> bool:
    return outcome.reply is not None and outcome.reply.completed


def _not_awaited(agent: str) -> _Outcome:
    failure = AgentFailure(FailureCode.NOT_AWAITED,
                           f"agent {agent} was not awaited: another agent completed first")
    response = AgentResponse(agent=agent, text="", data={}, state=None, task_id=None,
                             context_id=None, error=failure.to_json(), latency_ms=0.0)
    return _Outcome("error", response, None, failure, None)


_KIND_OF: dict[Status, Outcome] = {"success": "completed", "input_required": "input_required",
                                   "error": "failed"}
_STATE_OF: dict[Status, str] = {"success": "completed", "input_required": "input-required",
                                "error": "failed"}


def _together(route: Route, parts: tuple[_Outcome, ...]) -> _Outcome:
    """Several agents' outcomes as one, by the route's rule: `all` succeeds when every agent
    completed (an agent's failure fails the turn; one asking for more keeps it waiting), `any`
    and `first` when one did (else one asking keeps the turn waiting, else it failed). The
    answer joins the agents' texts, keeps each one's data under its name, and carries the
    first failure's error when the turn failed; each agent's own part stays in `parts`."""
    done = [part for part in parts if _completed(part)]
    asking = [part for part in parts if part.reply is not None and not part.reply.completed]
    failed = [part for part in parts if part.failure is not None
              and part.failure.code is not FailureCode.NOT_AWAITED]
    status: Status
    if route.succeed_when == "all":
        status = "error" if failed else "input_required" if asking else "success"
    else:
        status = "success" if done else "input_required" if asking else "error"
    failure = failed[0].failure if status == "error" and failed else None
    responses = [part.response for part in parts]
    response = AgentResponse(
        agent="+".join(response.agent for response in responses),
        text="\n".join(response.text for response in responses if response.text),
        data={response.agent: response.data for response in responses if response.data},
        state=_STATE_OF[status], task_id=None, context_id=None,
        error=failure.to_json() if failure is not None else None,
        latency_ms=max(response.latency_ms for response in responses))
    if status == "error" and failure is None:  # none failed: every one was not awaited
        failure = parts[0].failure
    return _Outcome(status, response, None, failure, None, parts)


def _nothing_called(error: dict[str, Any]) -> AgentResponse:
    """The agent's part of a turn that called none, carrying an error of the orchestrator's."""
    return AgentResponse(agent="", text="", data={}, state=None, task_id=None, context_id=None,
                         error=error, latency_ms=0.0)


def _answered(agent: str, reply: AgentReply, started: float) -> AgentResponse:
    return AgentResponse(
        agent=agent, text=reply.text, data=reply.data, state=reply.state,
        task_id=reply.task_id, context_id=reply.context_id, error=None,
        latency_ms=_since(started), attempts=reply.attempts)


def _failed(agent: str, failure: AgentFailure, started: float) -> AgentResponse:
    return AgentResponse(
        agent=agent, text=failure.arrived[0], data=failure.arrived[1],
        state=failure.detail.get("task_state"),
        task_id=failure.detail.get("task_id"), context_id=None, error=failure.to_json(),
        latency_ms=_since(started), attempts=failure.attempts)


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _replayed(replay: Replay) -> TurnResponse:
    """The first answer to a keyed turn, again; with the call's summary rebuilt from its trail
    when that answer completed the call."""
    answer = load_answer(replay.answer)
    if replay.completed is None:
        return answer
    session, trail = replay.completed
    return dataclasses.replace(answer, session_summary=session_state(session, load_steps(trail)))
