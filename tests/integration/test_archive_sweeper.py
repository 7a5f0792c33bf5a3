"""Calls reach the archive: each commit schedules its call beside it, and the sweeper archives
what is due — a completed call at once, a going one once idle — against a real Redis
(standalone and cluster) and moto's DynamoDB, with the sweeper's clock moved on. Two sweepers at
once write each step once; an archive that is down loses nothing and keeps the call alive."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from orchestrator_flows.archive.index import ACCOUNT_MARGIN_MS, Scheduled, account_key
from orchestrator_flows.archive.store import DynamoArchive, verify_call
from orchestrator_flows.settings import Settings
from orchestrator_flows.store import CallKeys
from orchestrator_flows.store.session_store import ARCHIVE_REFRESH_MS
from tests.support import archive_harness
from tests.support.archive_harness import Harness
from tests.support.archive_table import TABLE
from tests.support.scripted import STAGE_INTENTS

IDLE, TTL = archive_harness.IDLE, archive_harness.TTL


async def test_a_completed_call_is_archived_at_the_next_sweep(harness: Harness) -> None:
    await harness.play("DONE-1", STAGE_INTENTS)
    assert set(await harness.scheduled()) == {"DONE-1"}
    report = await harness.sweeper().run()
    assert (report.archived, report.failed) == (1, 0)
    call = await harness.archive.call("DONE-1")
    assert call is not None
    assert (call.status, call.step_count, call.account_id) == ("complete", 5, "ACC-1")
    verdict = await verify_call(harness.archive, "DONE-1")
    assert verdict is not None
    assert verdict.ok
    assert await harness.scheduled() == {}


async def test_a_going_call_is_archived_once_idle_and_again_after_more_turns(
    harness: Harness,
) -> None:
    await harness.play("GOING-1", STAGE_INTENTS[:1])
    harness.advance(ARCHIVE_REFRESH_MS / 1000 + 60)
    await harness.play("GOING-1", STAGE_INTENTS[1:2])  # the idle-due moment moves on
    harness.advance(IDLE - 60)
    assert (await harness.sweeper().run()).archived == 0  # idle, but not for long enough
    assert await harness.archive.call("GOING-1") is None
    harness.advance(120)
    assert (await harness.sweeper().run()).archived == 1
    first = await harness.archive.call("GOING-1")
    assert first is not None
    assert (first.status, first.step_count) == ("active", 2)
    assert await harness.scheduled() == {}
    harness.advance(60)
    await harness.play("GOING-1", STAGE_INTENTS[2:3])  # the caller came back: due again
    assert set(await harness.scheduled()) == {"GOING-1"}
    harness.advance(IDLE)
    assert (await harness.sweeper().run()).archived == 1
    later = await harness.archive.call("GOING-1")
    assert later is not None
    assert (later.status, later.step_count) == ("active", 3)
    await harness.play("GOING-1", STAGE_INTENTS[3:])
    assert (await harness.sweeper().run()).archived == 1
    last = await harness.archive.call("GOING-1")
    assert last is not None
    assert (last.status, last.step_count) == ("complete", 5)
    assert [link.number for link in await harness.archive.steps("GOING-1")] == [1, 2, 3, 4, 5]


async def test_a_call_is_scheduled_at_its_first_turn_and_its_last_not_at_every_turn(
    harness: Harness,
) -> None:
    index = harness.runtime.store.archive_index
    assert index is not None
    sent: list[int] = []
    schedule = index.schedule

    async def counted(call: Scheduled, now_ms: int) -> None:
        sent.append(call.due_ms)
        await schedule(call, now_ms)

    index.schedule = counted  # type: ignore[method-assign]
    for intent in STAGE_INTENTS:
        await harness.play("FEW-1", (intent,))
        harness.advance(30)
    first_turn = int((harness.now - 5 * 30) * 1000)
    assert sent == [first_turn + IDLE * 1000, first_turn + 4 * 30_000]


async def test_a_schedule_that_fails_loses_no_step_and_the_next_turn_schedules_again(
    harness: Harness,
) -> None:
    from orchestrator_flows.errors import StoreUnavailable

    index = harness.runtime.store.archive_index
    assert index is not None
    schedule = index.schedule
    failures = [StoreUnavailable("index down")]

    async def flaky(call: Scheduled, now_ms: int) -> None:
        if failures:
            raise failures.pop()
        await schedule(call, now_ms)

    index.schedule = flaky  # type: ignore[method-assign]
    await harness.play("FLAKY-1", STAGE_INTENTS[:1])
    assert await harness.scheduled() == {}
    steps = await harness.runtime.store.get("FLAKY-1")
    assert steps is not None
    assert len(steps[1]) == 1  # the step stands
    harness.advance(5)
    await harness.play("FLAKY-1", STAGE_INTENTS[1:2])  # within the refresh window, yet sent
    assert set(await harness.scheduled()) == {"FLAKY-1"}


async def test_two_sweepers_at_once_write_each_step_once(harness: Harness) -> None:
    for index in range(6):
        await harness.play(f"TWICE-{index}", STAGE_INTENTS)
    reports = await asyncio.gather(harness.sweeper().run(), harness.sweeper().run())
    assert sum(r.archived for r in reports) >= 6  # a call both took is archived by both
    items = harness.dynamodb.scan(TableName=TABLE)["Items"]
    assert len(items) == 6 * (1 + 5)
    assert len({(i["PK"]["S"], i["SK"]["S"]) for i in items}) == len(items)
    assert await harness.scheduled() == {}


async def test_turns_going_on_while_sweepers_archive_leave_exactly_one_item_per_step(
    harness: Harness,
) -> None:
    """Twelve calls play their turns at once while two sweepers keep archiving whatever is due
    (every call is idle-due on the sweepers' clock): partial trails are archived again and
    again as they grow, and at the end each call's archive is its whole trail, once."""
    calls = [f"BUSY-{number}" for number in range(12)]

    async def sweep_while(playing: asyncio.Future[Any]) -> None:
        while not playing.done():
            await harness.sweeper(ahead=IDLE).run()  # every call is idle-due to it
            await asyncio.sleep(0)

    playing = asyncio.ensure_future(asyncio.gather(
        *(harness.play(call, STAGE_INTENTS) for call in calls)))
    await asyncio.gather(playing, sweep_while(playing), sweep_while(playing))
    await harness.sweeper().run()
    items = harness.dynamodb.scan(TableName=TABLE)["Items"]
    assert len(items) == len({(i["PK"]["S"], i["SK"]["S"]) for i in items}) == 12 * (1 + 5)
    for call in calls:
        archived = await harness.archive.call(call)
        assert archived is not None
        assert (archived.status, archived.step_count) == ("complete", 5), call
        verdict = await verify_call(harness.archive, call)
        assert verdict is not None
        assert verdict.ok, verdict.describe()


async def test_an_archive_that_is_down_loses_nothing_and_keeps_the_call_alive(
    harness: Harness,
) -> None:
    await harness.play("DOWN-1", STAGE_INTENTS)
    keys = CallKeys.of("DOWN-1")
    await harness.raw.expire(keys.state, 30)  # about to expire
    down = DynamoArchive(harness.dynamodb, "no-such-table", 90)
    report = await harness.sweeper(archive=down).run()
    assert (report.archived, report.failed, report.kept_alive) == (0, 1, 1)
    assert await harness.raw.ttl(keys.state) > TTL - 60  # renewed, not left to run out
    assert set(await harness.scheduled()) == {"DOWN-1"}  # still due
    assert (await harness.sweeper().run()).archived == 1  # the archive is back
    assert await harness.archive.call("DOWN-1") is not None


async def test_a_due_call_that_is_gone_from_redis_leaves_the_index(harness: Harness) -> None:
    await harness.play("GONE-1", STAGE_INTENTS)
    keys = CallKeys.of("GONE-1")
    await harness.raw.delete(keys.state, keys.steps, keys.replies)  # expired
    report = await harness.sweeper().run()
    assert (report.gone, report.archived) == (1, 0)
    assert await harness.scheduled() == {}


async def test_a_call_rescheduled_after_the_sweeper_read_it_stays_due(harness: Harness) -> None:
    index = harness.runtime.store.archive_index
    assert index is not None
    now_ms = int(harness.now * 1000)
    await index.schedule(Scheduled("MOVED-1", "ACC-1", 1_000), now_ms)
    assert not await index.done(Scheduled("MOVED-1", "ACC-1", 999))
    assert await harness.scheduled() == {"MOVED-1": 1_000}
    assert await index.of_account("ACC-1", 10) == ["MOVED-1"]
    assert await index.done(Scheduled("MOVED-1", "ACC-1", 1_000))
    # Archived, it stays in its account's set until stale (an erasure must not miss it while
    # the archive's own index catches up): pruned by the account's next schedule a TTL on.
    assert await index.of_account("ACC-1", 10) == ["MOVED-1"]
    later = now_ms + TTL * 1000 + 1
    await index.schedule(Scheduled("MOVED-2", "ACC-1", later), later)
    assert await index.of_account("ACC-1", 10) == ["MOVED-2"]
    ttl = await harness.raw.pttl(account_key("ACC-1"))
    assert TTL * 1000 < ttl <= TTL * 1000 + ACCOUNT_MARGIN_MS  # the key itself expires


async def test_the_lag_is_how_long_the_oldest_due_call_has_waited(harness: Harness) -> None:
    await harness.play("LAG-1", STAGE_INTENTS)
    harness.advance(120)
    report = await harness.sweeper(archive=DynamoArchive(
        harness.dynamodb, "no-such-table", 90)).run()
    assert report.lag_seconds == pytest.approx(120, abs=1)


def test_idle_must_leave_time_to_archive_before_the_ttl() -> None:
    with pytest.raises(ValueError, match="ARCHIVE_IDLE_SECONDS"):
        Settings(archive_table=TABLE, archive_idle_seconds=3500, session_ttl_seconds=3600)
    Settings(archive_idle_seconds=3500, session_ttl_seconds=3600)  # no archive: no bound



async def test_delete_archives_the_call_as_ended_before_its_keys_go(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    await harness.play("DEL-1", STAGE_INTENTS[:3])
    assert (await api.delete("/session/DEL-1")).status_code == 204
    call = await harness.archive.call("DEL-1")
    assert call is not None
    assert (call.status, call.step_count) == ("ended", 3)
    assert [link.number for link in await harness.archive.steps("DEL-1")] == [1, 2, 3]
    assert not await harness.raw.exists(CallKeys.of("DEL-1").claim)
    read = (await api.get("/session/DEL-1")).json()  # from the archive now
    assert (read["source"], len(read["steps"]), read["is_complete"]) == ("archive", 3, False)


async def test_reads_fall_back_to_the_archive_once_redis_lets_the_call_go(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    await harness.play("READ-1", STAGE_INTENTS)
    live = (await api.get("/session/READ-1")).json()
    live_steps = (await api.get("/session/READ-1/steps")).json()
    assert (live["source"], live_steps["source"]) == ("live", "live")
    assert (await harness.sweeper().run()).archived == 1
    keys = CallKeys.of("READ-1")
    await harness.raw.delete(keys.state, keys.steps, keys.replies)  # its TTL ran out
    archived = (await api.get("/session/READ-1")).json()
    archived_steps = (await api.get("/session/READ-1/steps")).json()
    assert (archived["source"], archived_steps["source"]) == ("archive", "archive")
    assert {**archived, "source": "live"} == live
    assert {**archived_steps, "source": "live"} == live_steps
    assert (await api.get("/session/NEVER-1")).status_code == 404


async def test_delete_with_the_archive_down_leaves_the_call_as_it_was(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    await harness.play("DEL-2", STAGE_INTENTS[:2])
    harness.runtime.archives.opened = DynamoArchive(harness.dynamodb, "no-such-table", 90)
    refused = await api.delete("/session/DEL-2")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "archive_unavailable"
    assert len((await api.get("/session/DEL-2/steps")).json()["steps"]) == 2
    assert not await harness.raw.exists(CallKeys.of("DEL-2").claim)  # released
    await harness.play("DEL-2", STAGE_INTENTS[2:3])  # the call goes on


async def test_delete_while_a_turn_is_in_flight_is_409_and_an_unknown_call_404(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    await harness.play("DEL-3", STAGE_INTENTS[:1])
    held = await harness.runtime.store.claim("DEL-3")
    busy = await api.delete("/session/DEL-3")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "step_in_progress"
    await harness.runtime.store.release(held)
    assert (await api.delete("/session/NOBODY")).status_code == 404
    assert not await harness.raw.exists(CallKeys.of("NOBODY").claim)
    assert await harness.archive.call("NOBODY") is None


async def test_an_escalated_call_is_due_at_once_and_archived_with_its_handoff(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    await harness.play("ESC-1", ("greeting", "verify_identity", "escalate"))
    assert set(await harness.scheduled()) == {"ESC-1"}
    assert (await harness.sweeper().run()).archived == 1
    call = await harness.archive.call("ESC-1")
    assert call is not None
    assert (call.status, call.step_count) == ("escalated", 3)
    live = (await api.get("/session/ESC-1")).json()
    keys = CallKeys.of("ESC-1")
    await harness.raw.delete(keys.state, keys.steps, keys.replies)  # its TTL ran out
    archived = (await api.get("/session/ESC-1")).json()
    assert archived["handoff"]["reason"] == "caller_request"
    assert {**archived, "source": "live"} == live
    listed = (await api.get("/accounts/ACC-1/calls")).json()["calls"]
    assert [(c["call_identify_id"], c["status"]) for c in listed] == [("ESC-1", "escalated")]
