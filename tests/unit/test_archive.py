"""The DynamoDB archive (in moto): one item per step and one per call, written idempotently and
race-free, the call item only moving forward, every item expiring RETENTION_DAYS after it was
archived, an account's calls newest first by page, and a hash chain that finds the first step
someone changed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from orchestrator_flows.archive.chain import genesis
from orchestrator_flows.archive.store import (
    ArchiveConflict,
    ArchivedCall,
    DynamoArchive,
    verify_call,
)
from orchestrator_flows.errors import ArchiveUnavailable, InvalidCursor
from tests.support.archive_table import TABLE

NOW = 1_780_000_000


def step(number: int, text: str = "hello") -> str:
    return json.dumps({"step_number": number, "intent": "greeting", "input_message": text,
                       "response_data": {"text": f"answer {number}", "data": {"n": 1.5}}})


def call(steps: int, *, status: str = "active", call_id: str = "CALL-1",
         account: str = "ACC-1", updated_at: str = "2026-12-04T10:00:00Z") -> ArchivedCall:
    return ArchivedCall(call_id, account, "ECI-1", min(steps + 1, 5), tuple(range(1, steps + 1)),
                        status, "2026-12-04T09:00:00Z", updated_at, steps)  # type: ignore[arg-type]


def archive_of(client: Any, retention_days: int = 90) -> DynamoArchive:
    return DynamoArchive(client, TABLE, retention_days, clock=lambda: NOW)


def items(client: Any) -> list[dict[str, Any]]:
    """Every item of the table (a Scan answers 1 MB a page)."""
    pages = client.get_paginator("scan").paginate(TableName=TABLE)
    return [item for page in pages for item in page["Items"]]


async def test_a_call_is_one_item_and_each_step_one_more(dynamodb: Any) -> None:
    archive = archive_of(dynamodb)
    trail = [step(1), step(2, "my card is [CARD]"), step(3)]
    written = await archive.archive(call(3), trail)
    kept = await archive.call("CALL-1")
    assert kept == written
    assert (kept.step_count, kept.status, kept.account_id) == (3, "active", "ACC-1")
    links = await archive.steps("CALL-1")
    assert [link.number for link in links] == [1, 2, 3]
    assert json.loads(links[1].step)["input_message"] == "my card is [CARD]"
    assert kept.head == links[-1].hash
    assert len(items(dynamodb)) == 4
    verdict = await verify_call(archive, "CALL-1")
    assert verdict is not None
    assert verdict.ok


async def test_every_item_expires_retention_days_after_it_was_archived(dynamodb: Any) -> None:
    await archive_of(dynamodb, retention_days=30).archive(call(2), [step(1), step(2)])
    assert {int(item["expires_at"]["N"]) for item in items(dynamodb)} == {NOW + 30 * 86_400}


async def test_archiving_again_writes_nothing_twice_and_later_steps_are_added(
    dynamodb: Any,
) -> None:
    archive = archive_of(dynamodb)
    await archive.archive(call(2), [step(1), step(2)])
    await archive.archive(call(2), [step(1), step(2)])
    assert len(items(dynamodb)) == 3
    grown = await archive.archive(call(4, status="complete"), [step(i) for i in range(1, 5)])
    assert len(items(dynamodb)) == 5
    assert (await archive.call("CALL-1")) == grown
    verdict = await verify_call(archive, "CALL-1")
    assert verdict is not None
    assert verdict.ok


async def test_the_call_item_only_moves_forward(dynamodb: Any) -> None:
    archive = archive_of(dynamodb)
    trail = [step(i) for i in range(1, 4)]
    done = await archive.archive(call(3, status="complete"), trail)
    await archive.archive(call(2), trail[:2])  # a late archiver of an older state
    await archive.archive(call(3), trail)  # the same steps, not yet complete
    assert await archive.call("CALL-1") == done


async def test_archivers_running_together_write_each_step_once(dynamodb: Any) -> None:
    archive = archive_of(dynamodb)
    trail = [step(i) for i in range(1, 21)]
    results = await asyncio.gather(*(archive_of(dynamodb).archive(call(20), trail)
                                     for _ in range(4)))
    assert len({r.head for r in results}) == 1
    assert len(items(dynamodb)) == 21
    assert [link.number for link in await archive.steps("CALL-1")] == list(range(1, 21))


async def test_a_step_archived_with_other_content_is_a_conflict_and_is_not_overwritten(
    dynamodb: Any,
) -> None:
    archive = archive_of(dynamodb)
    await archive.archive(call(2), [step(1), step(2)])
    before = await archive.steps("CALL-1")
    with pytest.raises(ArchiveConflict, match="differs from what was archived"):
        await archive_of(dynamodb).archive(call(3), [step(1, "rewritten"), step(2), step(3)])
    assert await archive.steps("CALL-1") == before
    # Another archiver that has not seen the call item yet writes the steps themselves: the
    # first one that differs is refused, and nothing is overwritten.
    fresh = archive_of(dynamodb)
    fresh._call_item = lambda _: _nothing()  # type: ignore[method-assign, assignment]
    with pytest.raises(ArchiveConflict, match="step 1 of call CALL-1"):
        await fresh.archive(call(3), [step(1, "rewritten"), step(2), step(3)])
    assert (await archive.steps("CALL-1"))[:2] == before


async def _nothing() -> None:
    return None


@pytest.mark.parametrize(("tamper", "broken_at"), [
    ("change step 2", 2), ("drop step 2", 2), ("change the head", 4), ("drop the last step", 4),
])
async def test_the_chain_finds_the_first_step_that_was_tampered_with(
    dynamodb: Any, tamper: str, broken_at: int
) -> None:
    archive = archive_of(dynamodb)
    await archive.archive(call(4), [step(i) for i in range(1, 5)])
    key = {"PK": {"S": "CALL#CALL-1"}}
    if tamper == "change step 2":
        forged = json.dumps({**json.loads(step(2)), "input_message": "something else"})
        dynamodb.update_item(TableName=TABLE, Key={**key, "SK": {"S": "STEP#000002"}},
                             UpdateExpression="SET step = :s",
                             ExpressionAttributeValues={":s": {"S": forged}})
    elif tamper.startswith("drop"):
        number = 2 if tamper == "drop step 2" else 4
        dynamodb.delete_item(TableName=TABLE, Key={**key, "SK": {"S": f"STEP#{number:06d}"}})
    else:
        dynamodb.update_item(TableName=TABLE, Key={**key, "SK": {"S": "CALL"}},
                             UpdateExpression="SET head = :h",
                             ExpressionAttributeValues={":h": {"S": genesis("CALL-1")}})
    verdict = await verify_call(archive, "CALL-1")
    assert verdict is not None
    assert not verdict.ok
    assert verdict.broken_at == broken_at
    assert f"breaks at step {broken_at}" in verdict.describe()


async def test_a_call_not_archived_has_no_verdict(dynamodb: Any) -> None:
    assert await verify_call(archive_of(dynamodb), "NOBODY") is None


async def test_an_accounts_calls_are_listed_newest_first_by_page(dynamodb: Any) -> None:
    archive = archive_of(dynamodb)
    for index in range(5):
        await archive.archive(call(1, call_id=f"C-{index}",
                                   updated_at=f"2026-12-04T10:0{index}:00Z"), [step(1)])
    await archive.archive(call(1, call_id="OTHER", account="ACC-2"), [step(1)])
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        page = await archive.calls_of("ACC-1", 2, cursor)
        seen += [c.call_identify_id for c in page.calls]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == ["C-4", "C-3", "C-2", "C-1", "C-0"]
    with pytest.raises(InvalidCursor):
        await archive.calls_of("ACC-1", 2, "not a cursor")


async def test_a_table_that_cannot_be_used_is_archive_unavailable(dynamodb: Any) -> None:
    archive = DynamoArchive(dynamodb, "no-such-table", 90)
    with pytest.raises(ArchiveUnavailable, match="no-such-table"):
        await archive.archive(call(1), [step(1)])


async def test_the_verify_command_reports_the_chain(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator_flows.local.cli import main

    await archive_of(dynamodb).archive(call(3), [step(i) for i in range(1, 4)])
    monkeypatch.setenv("ARCHIVE_TABLE", TABLE)

    def verify(call_id: str) -> tuple[int, str]:
        # The command runs its own event loop: from a worker thread, as a shell would run it.
        code = _in_thread(lambda: main(["verify", call_id]))
        out = capsys.readouterr()
        return code, out.out + out.err

    assert verify("CALL-1") == (0, "call CALL-1: 3 steps, the chain holds\n")
    dynamodb.delete_item(TableName=TABLE, Key={"PK": {"S": "CALL#CALL-1"},
                                               "SK": {"S": "STEP#000002"}})
    code, said = verify("CALL-1")
    assert (code, said) == (1, "call CALL-1: the chain breaks at step 2: step 2 is missing\n")
    code, said = verify("NOBODY")
    assert code == 2
    assert "call NOBODY is not in the archive" in said
    # An erased call: its tombstone is reported (what existed and when, never its content).
    archive = archive_of(dynamodb)
    await archive.archive(call(2, call_id="GONE-1"), [step(1), step(2)])
    receipt = await archive.start_erasure("ACC-1")
    assert await archive.mark_erasing("GONE-1", "ACC-1", receipt.erasure_id, None) == "marked"
    assert await archive.finish_erasure("GONE-1", "ACC-1") == 2
    code, said = verify("GONE-1")
    assert code == 0
    assert said.startswith(f"call GONE-1 was erased at 2026-05-28T20:26:40Z (erasure "
                           f"{receipt.erasure_id}); its tombstone keeps 2 step hashes, head ")
    monkeypatch.delenv("ARCHIVE_TABLE")
    code, said = verify("CALL-1")
    assert code == 2
    assert "ARCHIVE_TABLE is not set" in said


def _in_thread(run: Any) -> int:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return int(pool.submit(run).result())


class FailingOnce:
    """A DynamoDB client whose `fail_at`-th step transaction fails as a throttled DynamoDB would
    (after the earlier ones were applied), then works again."""

    def __init__(self, client: Any, fail_at: int) -> None:
        self._client = client
        self._left = fail_at

    def transact_write_items(self, **arguments: Any) -> Any:
        from botocore.exceptions import ClientError

        self._left -= 1
        if self._left == 0:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                         "Message": "slow down"}}, "TransactWriteItems")
        return self._client.transact_write_items(**arguments)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_dynamodb_failing_mid_archive_loses_nothing_and_the_retry_completes_it(
    dynamodb: Any,
) -> None:
    trail = [step(i) for i in range(1, 61)]  # three transactions of 25, 25 and 10 steps
    flaky = DynamoArchive(FailingOnce(dynamodb, fail_at=2), TABLE, 90, clock=lambda: NOW)
    with pytest.raises(ArchiveUnavailable, match="could not be used"):
        await flaky.archive(call(60), trail)
    written = [item for item in items(dynamodb) if item["SK"]["S"].startswith("STEP#")]
    assert 0 < len(written) < 60  # some transactions were applied, one was not
    assert await flaky.call("CALL-1") is None  # and the call item, written last, was not
    done = await flaky.archive(call(60), trail)  # the next sweep
    assert done.step_count == 60
    assert len(items(dynamodb)) == 61
    verdict = await verify_call(flaky, "CALL-1")
    assert verdict is not None
    assert verdict.ok


async def test_a_step_longer_than_an_item_holds_is_archived_in_parts_and_read_back_whole(
    dynamodb: Any,
) -> None:
    archive = archive_of(dynamodb)
    # An agent may answer up to 1 MiB: steps of about 400 KB of text with multi-byte
    # characters (past the 400 KB an item holds), and more than one transaction takes (4 MB).
    long = [step(i, ("né " * 150_000)[: 300_000 + i]) for i in range(1, 9)]
    trail = [step(0), *long]
    trail = [json.dumps({**json.loads(text), "step_number": n}) for n, text in
             enumerate(trail, 1)]
    done = await archive.archive(call(len(trail)), trail)
    assert done.step_count == 9
    assert max(len(json.dumps(item, ensure_ascii=False).encode())
               for item in items(dynamodb)) < 400_000
    assert len(items(dynamodb)) > 1 + 9  # the long steps took more than one item each
    links = await archive.steps("CALL-1")
    assert [json.loads(link.step) for link in links] == [json.loads(text) for text in trail]
    verdict = await verify_call(archive, "CALL-1")
    assert verdict is not None
    assert verdict.ok
