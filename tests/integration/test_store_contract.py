"""One contract for the session store, run over every backend: embedded, a real Redis and a
real 3-master Redis Cluster (DESIGN §5, §9)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestrator_flows.errors import (
    ClaimLost,
    IdempotencyKeyReused,
    SessionEnded,
    StepInProgress,
)
from orchestrator_flows.session import Session
from orchestrator_flows.store import (
    Backend,
    Busy,
    CallKeys,
    Claim,
    Idempotency,
    Replay,
    SessionStore,
    Taken,
)
from orchestrator_flows.store.codec import session_fields
from orchestrator_flows.store.memory_backend import MemoryBackend
from tests.integration.conftest import Inspector

ANSWER = '{"status":"success"}'


def new_session(call: str = "CALL-1") -> Session:
    return Session(call_identify_id=call, account_id="ACC", eci="ECI", context_id="ctx")


def step(n: int) -> str:
    """A step as the engine hands it to the store: JSON text (the store never looks inside)."""
    return json.dumps({"step_number": n, "intent": "greeting",
                       "input_message": f"turn {n} — ünïcode"}, ensure_ascii=False)


async def test_first_claim_of_a_call_finds_no_session(store: SessionStore) -> None:
    claim = await store.claim("CALL-1")
    assert claim.session is None


async def test_second_claim_is_refused_while_the_first_is_held(store: SessionStore) -> None:
    await store.claim("CALL-1")
    with pytest.raises(StepInProgress) as busy:
        await store.claim("CALL-1")
    assert 1 <= busy.value.retry_after_seconds <= 20


async def test_claims_of_different_calls_do_not_interfere(store: SessionStore) -> None:
    await store.claim("CALL-1")
    assert (await store.claim("CALL-2")).session is None


async def test_commit_records_the_step_and_state_and_releases_the_claim(
    store: SessionStore,
) -> None:
    claim = await store.claim("CALL-1")
    session = new_session()
    session.step_count = 1
    await store.commit(claim, session, step(1))
    again = await store.claim("CALL-1")
    assert again.session == session
    found = await store.get("CALL-1")
    assert found is not None
    assert found[1] == [step(1)]


async def test_steps_are_appended_in_order(store: SessionStore) -> None:
    session = new_session()
    for n in range(1, 6):
        claim = await store.claim("CALL-1")
        await store.commit(claim, session, step(n))
    found = await store.get("CALL-1")
    assert found is not None
    assert found[1] == [step(n) for n in range(1, 6)]


async def test_commit_of_a_complete_call_returns_the_whole_trail(store: SessionStore) -> None:
    session = new_session()
    await store.commit(await store.claim("CALL-1"), session, step(1))
    session.is_complete = True
    trail = await store.commit(await store.claim("CALL-1"), session, step(2))
    assert trail == [step(1), step(2)]


async def test_commit_with_a_lapsed_claim_writes_nothing(store: SessionStore) -> None:
    store.lease_ms = 100
    stale = await store.claim("CALL-1")
    await asyncio.sleep(0.25)
    store.lease_ms = 20_000
    current = await store.claim("CALL-1")
    with pytest.raises(ClaimLost):
        await store.commit(stale, new_session(), step(1))
    assert await store.get("CALL-1") is None
    await store.commit(current, new_session(), step(2))
    found = await store.get("CALL-1")
    assert found is not None
    assert found[1] == [step(2)]


async def test_a_crashed_claim_expires_after_its_lease(store: SessionStore) -> None:
    store.lease_ms = 100
    await store.claim("CALL-1")  # never committed nor released: the process "crashed"
    await asyncio.sleep(0.25)
    assert (await store.claim("CALL-1")).session is None


async def test_release_frees_the_call_and_writes_nothing(store: SessionStore) -> None:
    await store.release(await store.claim("CALL-1"))
    await store.claim("CALL-1")
    assert await store.get("CALL-1") is None


async def test_release_by_a_stale_token_does_not_free_another_claim(store: SessionStore) -> None:
    store.lease_ms = 100
    stale = await store.claim("CALL-1")
    await asyncio.sleep(0.25)
    store.lease_ms = 20_000
    await store.claim("CALL-1")
    await store.release(stale)
    with pytest.raises(StepInProgress):
        await store.claim("CALL-1")


async def test_delete_removes_every_key_of_the_call(
    store: SessionStore, inspector: Inspector
) -> None:
    await store.commit(await store.claim("CALL-1"), new_session(), step(1))
    await store.claim("CALL-1")
    assert await store.delete("CALL-1") is True
    left = await inspector.pttls("CALL-1")
    assert list(left) == ["of:{CALL-1}:ended"]  # only the marker, for the session TTL
    assert 290_000 < left["of:{CALL-1}:ended"] <= 300_000
    assert await store.delete("CALL-1") is False


async def test_an_ended_call_takes_no_turn_and_is_not_created_again(store: SessionStore) -> None:
    await store.commit(await store.claim("CALL-1"), new_session(), step(1))
    await store.delete("CALL-1")
    with pytest.raises(SessionEnded):
        await store.claim("CALL-1")
    assert await store.get("CALL-1") is None


async def test_deleting_a_call_that_never_was_leaves_nothing(
    store: SessionStore, inspector: Inspector
) -> None:
    assert await store.delete("NEVER") is False
    assert await inspector.pttls("NEVER") == {}
    assert (await store.claim("NEVER")).session is None


async def test_every_key_carries_the_session_ttl_after_a_commit(
    store: SessionStore, inspector: Inspector
) -> None:
    await store.commit(await store.claim("CALL-1"), new_session(), step(1))
    pttls = await inspector.pttls("CALL-1")
    assert len(pttls) == 2  # state and steps; the claim is gone
    assert all(0 < ttl <= store.ttl_seconds * 1000 for ttl in pttls.values()), pttls


async def test_the_ttl_slides_on_every_commit(store: SessionStore, inspector: Inspector) -> None:
    store.ttl_seconds = 5
    await store.commit(await store.claim("CALL-1"), new_session(), step(1))
    await asyncio.sleep(1.2)
    before = await inspector.pttls("CALL-1")
    store.ttl_seconds = 300
    await store.commit(await store.claim("CALL-1"), new_session(), step(2))
    after = await inspector.pttls("CALL-1")
    assert set(before) == set(after)
    assert all(after[k] > 5000 >= before[k] for k in after)


async def test_keys_of_one_call_share_a_hash_tag(inspector: Inspector, store: SessionStore) -> None:
    await store.commit(await store.claim("CALL-1"), new_session(), step(1))
    keys = await inspector.pttls("CALL-1")
    assert {k.split("}")[0] for k in keys} == {"of:{CALL-1"}


async def test_concurrent_claims_admit_exactly_one(store: SessionStore) -> None:
    results = await asyncio.gather(*(store.claim("CALL-1") for _ in range(20)),
                                   return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, StepInProgress) for r in results if isinstance(r, BaseException))


KEYED = Idempotency("key-1", "a" * 64)


async def keyed_claim(store: SessionStore, idempotency: Idempotency = KEYED) -> Claim:
    claim = await store.claim("CALL-1", idempotency)
    assert isinstance(claim, Claim)
    return claim


async def test_an_answer_recorded_under_a_key_is_replayed_without_taking_the_claim(
    store: SessionStore,
) -> None:
    answer = '{"status":"success","response":{"text":"héllo","latency_ms":1.25}}'
    await store.commit(await keyed_claim(store), new_session(), step(1), answer)
    replay = await store.claim("CALL-1", KEYED)
    assert replay == Replay(answer, None)
    await store.commit(await store.claim("CALL-1"), new_session(), step(2))  # claim was free


async def test_a_key_seen_with_another_turn_is_refused(store: SessionStore) -> None:
    await store.commit(await keyed_claim(store), new_session(), step(1), ANSWER)
    with pytest.raises(IdempotencyKeyReused, match="key-1"):
        await store.claim("CALL-1", Idempotency("key-1", "b" * 64))


async def test_a_key_without_a_recorded_answer_claims_as_usual(store: SessionStore) -> None:
    claim = await keyed_claim(store)
    assert claim.session is None
    with pytest.raises(StepInProgress):  # the first is still in flight
        await store.claim("CALL-1", KEYED)


async def test_the_answer_that_completed_the_call_replays_with_its_summary(
    store: SessionStore,
) -> None:
    session = new_session()
    await store.commit(await store.claim("CALL-1"), session, step(1))
    session.is_complete = True
    trail = await store.commit(await keyed_claim(store), session, step(2), ANSWER)
    assert trail == [step(1), step(2)]
    replay = await store.claim("CALL-1", KEYED)
    assert isinstance(replay, Replay)
    assert replay.answer == ANSWER
    assert replay.completed == (session, (step(1), step(2)))


async def test_recorded_answers_share_the_session_ttl_and_go_with_delete(
    store: SessionStore, inspector: Inspector
) -> None:
    await store.commit(await keyed_claim(store), new_session(), step(1), ANSWER)
    await store.commit(await store.claim("CALL-1"), new_session(), step(2))  # refreshes all
    pttls = await inspector.pttls("CALL-1")
    assert any(key.endswith(":replies") for key in pttls)
    assert all(290_000 < ttl <= 300_000 for ttl in pttls.values()), pttls
    await store.delete("CALL-1")
    assert list(await inspector.pttls("CALL-1")) == ["of:{CALL-1}:ended"]
    with pytest.raises(SessionEnded):  # a keyed retry of an old turn does not start it again
        await store.claim("CALL-1", KEYED)


async def test_a_claim_or_commit_sent_twice_runs_once(
    backend_and_inspector: tuple[Backend, Inspector],
) -> None:
    """What makes a resend after a dead connection safe."""
    backend = backend_and_inspector[0]
    keys = CallKeys.of("CALL-1")
    state = session_fields(new_session())
    assert isinstance(await backend.claim(keys, "token-1", 20_000, None), Taken)
    assert isinstance(await backend.claim(keys, "token-1", 20_000, None), Taken)
    assert await backend.commit(keys, "token-1", 300, '{"n": 1}', state, True, None) == [
        '{"n": 1}']
    assert await backend.commit(keys, "token-1", 300, '{"n": 1}', state, True, None) == [
        '{"n": 1}']
    assert isinstance(await backend.claim(keys, "token-2", 20_000, None), Taken)  # it was freed
    assert isinstance(await backend.claim(keys, "token-3", 20_000, None), Busy)


async def test_a_session_kept_one_field_per_attribute_still_reads(
    backend_and_inspector: tuple[Backend, Inspector], store: SessionStore,
) -> None:
    """As versions before the single session field kept it: a call alive across a deploy."""
    backend = backend_and_inspector[0]
    keys = CallKeys.of("OLD-1")
    old = {"account_id": "ACC", "eci": "ECI", "context_id": "ctx", "current_flow_id": "2",
           "completed_flows": "[1]", "is_complete": "0", "step_count": "1",
           "created_at": "2026-11-25T00:00:00.000Z", "updated_at": "2026-11-25T00:00:01.000Z",
           "open_tasks": '{"auth": {"task_id": "t-1", "context_id": "ctx", '
                         '"a2a_version": "1.0", "stage_id": 2}}'}
    assert isinstance(await backend.claim(keys, "token-1", 20_000, None), Taken)
    assert await backend.commit(keys, "token-1", 300, step(1), old, False, None) == []
    found = await store.get("OLD-1")
    assert found is not None
    session = found[0]
    assert (session.current_flow_id, session.completed_flows, session.step_count) == (2, [1], 1)
    assert session.open_tasks["auth"].task_id == "t-1"
    claim = await store.claim("OLD-1")  # and the next turn writes the new layout over it
    assert claim.session == session
    await store.commit(claim, session, step(2))
    assert (await store.get("OLD-1")) == (session, [step(1), step(2)])


# Turns that wait their turn (TURN_WAIT_SECONDS): a queue of tickets under the call's tag.
async def queued(inspector: Inspector, call: str) -> int:
    key = CallKeys.of(call).queue
    if inspector.raw is None:
        assert isinstance(inspector.backend, MemoryBackend)
        return len(inspector.backend.keyspace.list_of(key))
    return int(await inspector.raw.llen(key))


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not await condition():
        assert loop.time() < end, "the condition never held"
        await asyncio.sleep(0.005)


async def test_waiting_turns_take_the_claim_in_arrival_order(
    store: SessionStore, inspector: Inspector
) -> None:
    first = await store.claim("CALL-Q")
    order: list[int] = []

    async def waiter(n: int) -> None:
        claim = await store.claim("CALL-Q", None, 10.0)
        assert isinstance(claim, Claim)
        order.append(n)
        await asyncio.sleep(0.01)  # a short agent call
        await store.commit(claim, claim.session or new_session("CALL-Q"), step(n))

    waiters = []
    for n in range(1, 6):
        waiters.append(asyncio.create_task(waiter(n)))
        await until(lambda n=n: _has(inspector, "CALL-Q", n))  # type: ignore[misc]
    await store.commit(first, new_session("CALL-Q"), step(0))
    await asyncio.gather(*waiters)
    assert order == [1, 2, 3, 4, 5]
    found = await store.get("CALL-Q")
    assert found is not None
    assert [json.loads(s)["step_number"] for s in found[1]] == [0, 1, 2, 3, 4, 5]
    assert await queued(inspector, "CALL-Q") == 0


async def _has(inspector: Inspector, call: str, count: int) -> bool:
    return await queued(inspector, call) == count


async def test_a_turn_that_gives_up_waiting_is_409_and_leaves_the_queue(
    store: SessionStore, inspector: Inspector
) -> None:
    await store.claim("CALL-Q")
    with pytest.raises(StepInProgress) as busy:
        await store.claim("CALL-Q", None, 0.3)
    assert busy.value.retry_after_seconds >= 1
    assert await queued(inspector, "CALL-Q") == 0


async def test_a_waiting_turn_gets_the_claim_of_a_holder_that_crashed(
    store: SessionStore,
) -> None:
    short = SessionStore(backend=store.backend, ttl_seconds=300, lease_seconds=0.4)
    await short.claim("CALL-Q")  # never committed nor released: its lease lapses
    claim = await store.claim("CALL-Q", None, 3.0)
    assert isinstance(claim, Claim)


async def test_a_waiting_turn_finds_the_call_ended_by_delete(store: SessionStore) -> None:
    held = await store.claim("CALL-Q")
    await store.commit(held, new_session("CALL-Q"), step(1))
    await store.claim("CALL-Q")
    waiting = asyncio.create_task(store.claim("CALL-Q", None, 5.0))
    await asyncio.sleep(0.1)
    assert await store.delete("CALL-Q")
    with pytest.raises(SessionEnded):
        await asyncio.wait_for(waiting, 2.0)


async def test_a_recorded_answer_is_replayed_at_once_never_queued(store: SessionStore) -> None:
    key = Idempotency("k", "f" * 64)
    claim = await store.claim("CALL-Q", key)
    assert isinstance(claim, Claim)
    await store.commit(claim, new_session("CALL-Q"), step(1), ANSWER)
    await store.claim("CALL-Q")  # another turn holds the call, for 20 s
    # Queued, it would wait its 5 s and be refused: the holder outlasts the wait.
    replay = await store.claim("CALL-Q", key, 5.0)
    assert isinstance(replay, Replay)


async def test_a_keyed_repeat_replayed_after_waiting_leaves_no_ticket(
    store: SessionStore, inspector: Inspector
) -> None:
    key = Idempotency("k", "f" * 64)
    original = await store.claim("CALL-Q", key)
    assert isinstance(original, Claim)
    repeat = asyncio.create_task(store.claim("CALL-Q", key, 5.0))
    await until(lambda: _has(inspector, "CALL-Q", 1))
    await store.commit(original, new_session("CALL-Q"), step(1), ANSWER)
    assert isinstance(await repeat, Replay)
    assert await queued(inspector, "CALL-Q") == 0
    assert isinstance(await store.claim("CALL-Q"), Claim)  # free: nobody is in line before it


async def test_a_turn_cancelled_as_it_queues_leaves_its_ticket(
    store: SessionStore, inspector: Inspector
) -> None:
    holder = await store.claim("CALL-Q")
    real = store.backend.claim

    async def ran_then_cancelled(*args: Any, **options: Any) -> Any:
        await real(*args, **options)  # the script ran; its answer is never read
        raise asyncio.CancelledError

    store.backend.claim = ran_then_cancelled  # type: ignore[method-assign]
    try:
        with pytest.raises(asyncio.CancelledError):
            await store.claim("CALL-Q", None, 5.0)
    finally:
        store.backend.claim = real  # type: ignore[method-assign]
    assert await queued(inspector, "CALL-Q") == 0
    await store.commit(holder, new_session("CALL-Q"), step(1))
    assert isinstance(await store.claim("CALL-Q"), Claim)


async def test_delete_of_a_call_whose_first_turn_is_in_flight_leaves_that_turn_alone(
    store: SessionStore,
) -> None:
    first = await store.claim("CALL-Q")
    assert not await store.delete("CALL-Q")  # 404: no session yet
    await store.commit(first, new_session("CALL-Q"), step(1))  # its claim still holds
    found = await store.get("CALL-Q")
    assert found is not None
    assert len(found[1]) == 1
