"""Erasure of an account's data and the account's list of calls, against a real Redis (standalone
and cluster) and moto's DynamoDB: everything of one account goes, in Redis and in the archive,
nothing of another does; each erased call leaves a tombstone of ids, hashes and times; requests
go a batch at a time, are idempotent, and finish what an interrupted one began; an archiver that
read a call before its erasure does not write it back."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest

from orchestrator_flows.archive.chain import canonical, chained
from orchestrator_flows.archive.index import account_key
from orchestrator_flows.archive.store import ArchivedCall, CallErased, DynamoArchive
from orchestrator_flows.errors import ArchiveUnavailable, ClaimLost
from orchestrator_flows.records import ErasureReceipt
from orchestrator_flows.store import CallKeys
from tests.support.archive_harness import IDLE, Harness
from tests.support.archive_table import TABLE
from tests.support.scripted import STAGE_INTENTS


def table_items(harness: Harness) -> list[dict[str, Any]]:
    return list(harness.dynamodb.scan(TableName=TABLE, ConsistentRead=True)["Items"])


def items_of(harness: Harness, calls: set[str]) -> list[dict[str, Any]]:
    return [item for item in table_items(harness)
            if item["PK"]["S"].removeprefix("CALL#") in calls]


async def redis_keys(harness: Harness) -> dict[str, Any]:
    """Every key Redis holds, with what it holds (for "nothing else changed")."""
    found: dict[str, Any] = {}
    async for key in harness.raw.scan_iter(match="*"):
        kind = await harness.raw.type(key)
        if kind == "hash":
            found[key] = await harness.raw.hgetall(key)
        elif kind == "list":
            found[key] = await harness.raw.lrange(key, 0, -1)
        elif kind == "zset":
            found[key] = await harness.raw.zrange(key, 0, -1, withscores=True)
        else:
            found[key] = await harness.raw.get(key) if kind == "string" else kind
    return found


async def two_accounts(harness: Harness) -> tuple[set[str], set[str]]:
    """Each of ACC-1 and ACC-2 has: DONE, complete, archived and still in Redis; IDLE, archived
    once idle with 2 steps, then a third step in Redis; LIVE, 2 steps only in Redis; ENDED, 1
    step archived once idle, then gone from Redis."""
    calls: dict[str, set[str]] = {}
    for account in ("ACC-1", "ACC-2"):
        await harness.play(f"{account}-DONE", STAGE_INTENTS, account=account)
        await harness.play(f"{account}-IDLE", STAGE_INTENTS[:2], account=account)
        await harness.play(f"{account}-ENDED", STAGE_INTENTS[:1], account=account)
        calls[account] = {f"{account}-{kind}" for kind in ("DONE", "IDLE", "LIVE", "ENDED")}
    harness.advance(IDLE + 1)
    assert (await harness.sweeper().run()).archived == 6
    for account in calls:
        await harness.play(f"{account}-LIVE", STAGE_INTENTS[:2], account=account)
        await harness.play(f"{account}-IDLE", STAGE_INTENTS[2:3], account=account)
        assert await harness.runtime.store.delete(f"{account}-ENDED")
    return calls["ACC-1"], calls["ACC-2"]


async def test_erasure_removes_everything_of_one_account_and_nothing_of_another(
    harness: Harness,
) -> None:
    erased, kept = await two_accounts(harness)
    other_items = items_of(harness, kept)
    other_keys = {key: value for key, value in (await redis_keys(harness)).items()
                  if "ACC-2" in key}
    receipt = await harness.eraser().erase("ACC-1")

    assert (receipt.status, receipt.account_id) == ("complete", "ACC-1")
    assert (receipt.calls_erased, receipt.live_calls_erased) == (4, 3)  # ENDED was not live
    assert receipt.steps_erased == 5 + 3 + 2 + 1
    for item in items_of(harness, erased):  # only tombstones are left
        assert item["SK"]["S"] == "CALL"
        assert set(item) == {"PK", "SK", "account_id", "erasure_id", "status", "created_at",
                             "updated_at", "step_count", "hashes", "head", "erased_at",
                             "expires_at"}
        assert item["status"]["S"] == "erased"
    for call in erased:
        assert await harness.runtime.store.get(call) is None
        assert await harness.archive.call(call) is None
    left = await redis_keys(harness)
    assert not [key for key in left if "ACC-1" in key and not key.endswith(":ended")]
    assert items_of(harness, kept) == other_items
    assert {key: value for key, value in left.items() if "ACC-2" in key} == other_keys


async def test_a_tombstone_keeps_the_chain_of_what_was_erased(harness: Harness) -> None:
    await harness.play("TOMB-1", STAGE_INTENTS)
    found = await harness.runtime.store.get("TOMB-1")
    assert found is not None
    chain = chained("TOMB-1", [canonical(step) for step in found[1]])
    await harness.eraser().erase("ACC-1")
    tombstone = await harness.archive.tombstone("TOMB-1")
    assert tombstone is not None
    assert tombstone.finished
    assert tombstone.hashes == tuple(link.hash for link in chain)
    assert tombstone.head == chain[-1].hash
    assert "TOMB-1" in tombstone.describe()


async def test_erasure_goes_a_batch_at_a_time_and_a_repeat_answers_the_same_receipt(
    harness: Harness,
) -> None:
    for number in range(5):
        await harness.play(f"BATCH-{number}", STAGE_INTENTS[:2])
    eraser = harness.eraser(batch=2)
    receipts: list[ErasureReceipt] = []
    while not receipts or receipts[-1].status == "in_progress":
        receipts.append(await eraser.erase("ACC-1"))
        assert len(receipts) <= 5
    assert [r.calls_erased for r in receipts] == [2, 4, 5]
    assert len({r.erasure_id for r in receipts}) == 1
    assert receipts[-1].finished_at is not None
    assert await eraser.erase("ACC-1") == receipts[-1]  # nothing left: the same answer
    await harness.play("BATCH-NEW", STAGE_INTENTS[:1])  # a new call: a new erasure
    again = await eraser.erase("ACC-1")
    assert (again.status, again.calls_erased) == ("complete", 1)
    assert again.erasure_id != receipts[-1].erasure_id
    history = [item for item in table_items(harness)
               if item["PK"]["S"] == "ACCOUNT#ACC-1" and item["SK"]["S"].startswith("ERASURE#")]
    assert len(history) == 2


async def test_requests_erasing_together_count_each_call_once(harness: Harness) -> None:
    for number in range(6):
        await harness.play(f"RACE-{number}", STAGE_INTENTS[:2])
    receipts = await asyncio.gather(*(harness.eraser().erase("ACC-1") for _ in range(3)))
    final = await harness.archive.receipt("ACC-1")
    assert final is not None
    assert (final.status, final.calls_erased, final.steps_erased) == ("complete", 6, 12)
    assert {r.erasure_id for r in receipts} == {final.erasure_id}


async def test_an_interrupted_erasure_is_finished_by_the_next_request(harness: Harness) -> None:
    await harness.play("CUT-1", STAGE_INTENTS)
    assert (await harness.sweeper().run()).archived == 1

    class Cut(DynamoArchive):
        async def finish_erasure(self, call_identify_id: str, account_id: str) -> int:
            raise ArchiveUnavailable("throttled")

    with pytest.raises(ArchiveUnavailable):
        await harness.eraser(archive=Cut(harness.dynamodb, TABLE, 90)).erase("ACC-1")
    half = await harness.archive.tombstone("CUT-1")
    assert half is not None
    assert not half.finished
    assert len(items_of(harness, {"CUT-1"})) == 1 + 5  # the steps are still there
    receipt = await harness.eraser().erase("ACC-1")
    assert (receipt.status, receipt.calls_erased, receipt.steps_erased) == ("complete", 1, 5)
    assert len(items_of(harness, {"CUT-1"})) == 1  # the tombstone
    tombstone = await harness.archive.tombstone("CUT-1")
    assert tombstone is not None
    assert tombstone.finished


async def test_an_archiver_that_read_the_call_before_its_erasure_does_not_write_it_back(
    harness: Harness,
) -> None:
    await harness.play("LATE-1", STAGE_INTENTS)
    found = await harness.runtime.store.get("LATE-1")  # what a sweeper read, a moment before
    assert found is not None
    await harness.eraser().erase("ACC-1")
    with pytest.raises(CallErased):
        await harness.archive.archive(ArchivedCall.of(found[0]), found[1])
    assert len(items_of(harness, {"LATE-1"})) == 1
    # An archiver that read the call item (none yet) just before the erasure marked it: its
    # step writes are refused by the tombstone.
    await harness.play("LATE-3", STAGE_INTENTS[:2])
    found = await harness.runtime.store.get("LATE-3")
    assert found is not None
    eraser = harness.eraser()

    class ReadJustBefore(DynamoArchive):
        async def _call_item(self, call_identify_id: str) -> dict[str, Any] | None:
            item = await super()._call_item(call_identify_id)
            await eraser.erase("ACC-1")
            return item

    with pytest.raises(CallErased):
        await ReadJustBefore(harness.dynamodb, TABLE, 90).archive(
            ArchivedCall.of(found[0]), found[1])
    assert len(items_of(harness, {"LATE-3"})) == 1
    # And a sweeper finding it due takes it off the index without archiving it.
    await harness.play("LATE-2", STAGE_INTENTS)
    sweeper = harness.sweeper()
    real = sweeper.store.get

    erased: list[str] = []

    async def erased_meanwhile(call_identify_id: str) -> Any:
        read = await real(call_identify_id)
        if not erased:
            erased.append(call_identify_id)
            await harness.eraser().erase("ACC-1")
        return read

    sweeper.store.get = erased_meanwhile  # type: ignore[method-assign]
    try:
        report = await sweeper.run()
    finally:
        sweeper.store.get = real  # type: ignore[method-assign]
    assert (report.archived, report.gone, report.failed) == (0, 1, 0)
    assert len(items_of(harness, {"LATE-2"})) == 1
    assert await harness.scheduled() == {}


async def test_a_turn_in_flight_during_the_erasure_writes_nothing(harness: Harness) -> None:
    await harness.play("FLIGHT-1", STAGE_INTENTS[:1])
    store = harness.runtime.store
    claim = await store.claim("FLIGHT-1")
    receipt = await harness.eraser().erase("ACC-1")
    assert claim.session is not None
    harness.advance(3600)  # far enough that its commit schedules the call again, beside it
    with pytest.raises(ClaimLost):
        await store.commit(claim, claim.session, json.dumps({"step_number": 2}))
    assert await store.get("FLIGHT-1") is None
    # The schedule sent beside the lost commit was taken back: nothing of the call is left in
    # the index, and a repeat of the erasure answers the same receipt.
    assert not await harness.raw.exists(account_key("ACC-1"))
    assert await harness.scheduled() == {}
    assert await harness.eraser().erase("ACC-1") == receipt


async def test_the_account_routes(harness: Harness, api: httpx.AsyncClient) -> None:
    for number in range(3):
        await harness.play(f"LIST-{number}", STAGE_INTENTS)
        harness.advance(60)
    await harness.play("OTHER-1", STAGE_INTENTS, account="ACC-2")
    assert (await harness.sweeper().run()).archived == 4
    first = await api.get("/accounts/ACC-1/calls", params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [c["call_identify_id"] for c in page["calls"]] == ["LIST-2", "LIST-1"]
    assert page["calls"][0]["status"] == "complete"
    assert page["calls"][0]["step_count"] == 5
    rest = (await api.get("/accounts/ACC-1/calls",
                          params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [c["call_identify_id"] for c in rest["calls"]] == ["LIST-0"]
    for bad in ({"cursor": "not-a-cursor"}, {"limit": 0}, {"limit": 101}):
        refused = await api.get("/accounts/ACC-1/calls", params=bad)
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] in {"invalid_cursor", "invalid_request"}
    assert (await api.get("/accounts/bad%20id/calls")).status_code == 422

    erased = await api.delete("/accounts/ACC-1/data")
    assert erased.status_code == 200
    receipt = erased.json()
    assert (receipt["status"], receipt["calls_erased"]) == ("complete", 3)
    again = await api.delete("/accounts/ACC-1/data")
    assert (again.status_code, again.json()) == (200, receipt)
    assert (await api.get("/accounts/ACC-1/calls")).json()["calls"] == []
    assert (await api.get("/session/LIST-0")).status_code == 404
    assert len((await api.get("/accounts/ACC-2/calls")).json()["calls"]) == 1


async def test_a_batch_left_over_answers_202(
    harness: Harness, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestrator_flows.archive.erasure as erasure

    for number in range(3):
        await harness.play(f"MANY-{number}", STAGE_INTENTS[:1])
    with monkeypatch.context() as patched:
        patched.setattr(erasure, "ERASE_BATCH", 2)
        first = await api.delete("/accounts/ACC-1/data")
    assert (first.status_code, first.json()["status"]) == (202, "in_progress")
    last = await api.delete("/accounts/ACC-1/data")
    assert (last.status_code, last.json()["calls_erased"]) == (200, 3)


async def test_erasing_one_account_leaves_another_accounts_call_under_the_same_id(
    harness: Harness,
) -> None:
    await harness.play("SHARED-1", STAGE_INTENTS, account="ACC-B")
    assert (await harness.sweeper().run()).archived == 1
    keys = CallKeys.of("SHARED-1")
    await harness.raw.delete(keys.state, keys.steps, keys.replies)  # B's call left Redis
    before = items_of(harness, {"SHARED-1"})
    await harness.play("SHARED-1", STAGE_INTENTS[:2], account="ACC-A")  # the id, used again
    receipt = await harness.eraser().erase("ACC-A")
    assert receipt.status == "complete"
    assert await harness.runtime.store.get("SHARED-1") is None  # A's live call: erased
    assert items_of(harness, {"SHARED-1"}) == before  # B's archived call: untouched
    assert (await harness.eraser().erase("ACC-B")).calls_erased == 1


async def test_delete_of_a_call_whose_id_was_erased_ends_it_and_a_conflict_is_409(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    await harness.play("GONE-1", STAGE_INTENTS[:2])
    await harness.eraser().erase("ACC-1")
    await harness.play("GONE-2", STAGE_INTENTS[:2])
    assert (await harness.sweeper(ahead=IDLE).run()).archived == 1
    keys = CallKeys.of("GONE-2")
    await harness.raw.delete(keys.state, keys.steps, keys.replies)
    await harness.play("GONE-2", STAGE_INTENTS[:1], account="ACC-1")  # another trail, same id
    conflict = await api.delete("/session/GONE-2")
    assert (conflict.status_code, conflict.json()["error"]["code"]) == (409, "archive_conflict")
    assert await harness.runtime.store.get("GONE-2") is not None  # left as it was
    keys = CallKeys.of("GONE-1")
    await harness.raw.delete(keys.ended)  # its ended marker ran out: the id comes back
    await harness.play("GONE-1", STAGE_INTENTS[:1])
    assert (await api.delete("/session/GONE-1")).status_code == 204  # ended, not archived
    tombstone = await harness.archive.tombstone("GONE-1")
    assert tombstone is not None


@pytest.mark.parametrize("cursor", [
    base64.urlsafe_b64encode(b"[" * 1000).decode(),  # nested past the parser's depth
    base64.urlsafe_b64encode(json.dumps({"c": "CALL#X", "u": "t" * 2000 + "#X"}).encode()
                             ).decode(),  # a sort key past DynamoDB's 1,024 bytes
])
async def test_hostile_cursors_are_422(api: httpx.AsyncClient, cursor: str) -> None:
    refused = await api.get("/accounts/ACC-1/calls", params={"cursor": cursor[:2048]})
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_cursor")
