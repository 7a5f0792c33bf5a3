"""The archive: a call's record kept after Redis lets it go, in one DynamoDB table per stack
(its items: `archive/items.py`).

Writes are idempotent and race-free. A step item is written once (`attribute_not_exists`): a
second archiver writing the same step finds it there with the same hash and goes on; a different
hash is a conflict, reported, never overwritten. The call item is written last and only moves
forward (a condition on its `progress`: step count, then status, then time), so a late or
repeated archiver never takes it back. A reader trusts the call item: the steps it counts are
all written. Every item expires RETENTION_DAYS after the call was archived.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from orchestrator_flows.archive.chain import (
    Link,
    Verdict,
    canonical,
    chained,
    genesis,
    verify,
)
from orchestrator_flows.archive.items import (
    ACCOUNT_PREFIX,
    BATCH_WRITE,
    CALL_SK,
    STEP_PREFIX,
    TRANSACTION_TRIES,
    decode_cursor,
    encode_cursor,
    erasure_key,
    iso_time,
    key,
    not_erased,
    pk,
    receipt_from,
    receipt_item,
    receipt_key,
    sk,
    step_items,
    transactions,
)
from orchestrator_flows.errors import ArchiveUnavailable, OrchestratorError
from orchestrator_flows.records import CallStatus, ErasureReceipt
from orchestrator_flows.session import Session

# What marking a call for erasure did: marked it (and counted it); found it marked already; found
# it is another account's call; found the erasure closed by another request.
Mark = Literal["marked", "already", "foreign", "closed"]
# How far a call item has moved on, as the order its updates come in: never backwards.
_STATUS_RANK: dict[str, int] = {"active": 0, "complete": 1, "escalated": 1, "ended": 2}
DAY_SECONDS = 86_400


class ArchiveConflict(OrchestratorError):
    """A step already archived with another content than the one being archived."""


class CallErased(OrchestratorError):
    """The call was erased (its archive holds a tombstone): it is never archived again."""


@dataclass(frozen=True, slots=True)
class ArchivedCall:
    call_identify_id: str
    account_id: str
    eci: str
    current_flow_id: int
    completed_flows: tuple[int, ...]
    status: CallStatus
    created_at: str
    updated_at: str
    step_count: int
    # Set by the archive when it writes the call: the last step's hash (the genesis for a call
    # without steps), and the epoch seconds of that write.
    head: str = ""
    archived_at: int = 0

    @classmethod
    def of(cls, session: Session, status: CallStatus | None = None) -> ArchivedCall:
        """The call item of a session as Redis holds it: complete, escalated or active, unless
        `status` says otherwise (a call being deleted is `ended`)."""
        held: CallStatus = ("complete" if session.is_complete else
                            "escalated" if session.handoff is not None else "active")
        return cls(session.call_identify_id, session.account_id, session.eci,
                   session.current_flow_id, tuple(session.completed_flows), status or held,
                   session.created_at, session.updated_at, session.step_count)

    @property
    def progress(self) -> str:
        """What the call item's condition compares: a later archive of a call has a greater
        one (more steps; or as many, and complete or ended; or as many, later)."""
        return f"{self.step_count:06d}:{_STATUS_RANK[self.status]}:{self.updated_at}"

    @property
    def is_complete(self) -> bool:
        return self.status == "complete"


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What is left of an erased call: ids, times and its chain's hashes, no content."""

    call_identify_id: str
    account_id: str
    erasure_id: str
    finished: bool  # its steps are deleted (else an erasure was interrupted while at it)
    created_at: str
    updated_at: str
    erased_at: int
    head: str
    hashes: tuple[str, ...]

    def describe(self) -> str:
        return (f"call {self.call_identify_id} was erased at {iso_time(self.erased_at)} (erasure "
                f"{self.erasure_id}); its tombstone keeps {len(self.hashes)} step hashes, "
                f"head {self.head}")


@dataclass(frozen=True, slots=True)
class CallPage:
    calls: tuple[ArchivedCall, ...]
    cursor: str | None  # the next page's, or None when this is the last


class Archive(Protocol):
    async def archive(self, call: ArchivedCall, steps: Sequence[str]) -> ArchivedCall: ...

    async def call(self, call_identify_id: str) -> ArchivedCall | None: ...

    async def steps(self, call_identify_id: str) -> list[Link]: ...

    async def calls_of(self, account_id: str, limit: int, cursor: str | None) -> CallPage: ...

    async def tombstone(self, call_identify_id: str) -> Tombstone | None: ...

    async def erasable(self, account_id: str, limit: int) -> list[str]: ...

    async def mark_erasing(self, call_identify_id: str, account_id: str, erasure_id: str,
                           live: tuple[ArchivedCall, Sequence[str]] | None) -> Mark: ...

    async def finish_erasure(self, call_identify_id: str, account_id: str) -> int: ...

    async def receipt(self, account_id: str) -> ErasureReceipt | None: ...

    async def start_erasure(self, account_id: str) -> ErasureReceipt: ...

    async def close_erasure(self, receipt: ErasureReceipt) -> ErasureReceipt: ...

    async def erasure(self, account_id: str, erasure_id: str) -> ErasureReceipt: ...


def open_archive(table: str, retention_days: int) -> DynamoArchive:
    """The stack's archive, through a boto3 client of the function's region and role."""
    import boto3

    return DynamoArchive(boto3.client("dynamodb"), table, retention_days)


async def verify_call(archive: Archive, call_identify_id: str) -> Verdict | None:
    """Recompute an archived call's chain; None when the archive does not hold the call."""
    call = await archive.call(call_identify_id)
    if call is None:
        return None
    return verify(call_identify_id, await archive.steps(call_identify_id), call.head,
                  call.step_count)


def links_of(call: ArchivedCall, steps: Sequence[str]) -> list[Link]:
    """The chain of a call's whole trail (as Redis stores it)."""
    return chained(call.call_identify_id, [canonical(step) for step in steps])


class DynamoArchive:
    """The archive in DynamoDB, through a boto3 client (thread-safe; its calls run in worker
    threads so that the event loop never waits on them)."""

    def __init__(self, client: Any, table: str, retention_days: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self._retention_seconds = retention_days * DAY_SECONDS
        self._clock = clock

    async def archive(self, call: ArchivedCall, steps: Sequence[str]) -> ArchivedCall:
        """Write the call's steps not yet archived, then the call item; returns what was
        written. Safe to repeat, and to run beside another archiver of the same call."""
        links = links_of(call, steps)
        if len(links) != call.step_count:
            raise ArchiveConflict(f"call {call.call_identify_id} counts {call.step_count} "
                                  f"steps but {len(links)} were given")
        now = int(self._clock())
        item = await self._call_item(call.call_identify_id)
        if item is not None and "erasure_id" in item:
            raise CallErased(f"call {call.call_identify_id} was erased; it is not archived "
                             "again")
        done = _call_from(item) if item is not None else None
        start = done.step_count if done is not None else 0
        if done is not None and start:
            # What is archived must be where this trail leads (checked at its last step the
            # archive holds): else the trail is another one, and nothing is written.
            upto = min(start, len(links))
            archived = done.head if upto == start else await self._step_hash(
                call.call_identify_id, upto)
            if upto and links[upto - 1].hash != archived:
                raise ArchiveConflict(
                    f"call {call.call_identify_id}'s trail differs from what was archived of "
                    f"it up to step {upto}; nothing was written")
            if start > len(links):
                return done  # an archiver behind the archive: it has nothing to add
        # One transaction after another: each checks the call item, and transactions on one
        # item at once would cancel one another (TransactionConflict). A failure stops here;
        # the call item is not written, and the next archiver goes on from what was.
        for chunk in transactions(links[start:]):
            await self._put_steps(call.call_identify_id, chunk, now)
        written = dataclasses.replace(
            call, head=links[-1].hash if links else genesis(call.call_identify_id),
            archived_at=now)
        await self._put_call(written)
        return written

    async def call(self, call_identify_id: str) -> ArchivedCall | None:
        """The archived call; None when the archive does not hold it, or holds only its
        tombstone (the call was erased)."""
        item = await self._call_item(call_identify_id)
        return _call_from(item) if item is not None and "erasure_id" not in item else None

    async def _call_item(self, call_identify_id: str) -> dict[str, Any] | None:
        found = await self._run("get_item", TableName=self._table, ConsistentRead=True,
                                Key=key(call_identify_id, CALL_SK))
        item: dict[str, Any] | None = found.get("Item")
        return item

    async def steps(self, call_identify_id: str) -> list[Link]:
        links: list[Link] = []
        for item in await self._step_rows(call_identify_id):
            number, _, part = item["SK"]["S"][len(STEP_PREFIX):].partition(".")
            if part and links and links[-1].number == int(number):  # the step goes on
                last = links[-1]
                links[-1] = Link(last.number, last.step + item["step"]["S"], last.hash)
            elif not part:
                links.append(Link(int(number), item["step"]["S"], item["hash"]["S"]))
        return links

    async def _step_rows(self, call_identify_id: str,
                         attributes: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every item of the call's steps (a long step's parts too), in order: whole, or only
        the `attributes` named (by placeholders: `hash` is a reserved word)."""
        names = {f"#a{at}": name for at, name in enumerate(attributes)}
        projection = ({"ProjectionExpression": ", ".join(names),
                       "ExpressionAttributeNames": names} if names else {})
        rows: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            page = await self._run(
                "query", TableName=self._table, ConsistentRead=True,
                KeyConditionExpression="PK = :pk AND begins_with(SK, :steps)",
                ExpressionAttributeValues={":pk": {"S": pk(call_identify_id)},
                                           ":steps": {"S": STEP_PREFIX}},
                **projection, **({"ExclusiveStartKey": start} if start else {}))
            rows += page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return rows

    async def calls_of(self, account_id: str, limit: int, cursor: str | None) -> CallPage:
        options: dict[str, Any] = {}
        if cursor is not None:
            options["ExclusiveStartKey"] = decode_cursor(cursor, account_id)
        page = await self._run(
            "query", TableName=self._table, IndexName="GSI1", ScanIndexForward=False,
            Limit=limit, KeyConditionExpression="GSI1PK = :account",
            # A call being erased is no longer listed (its tombstone keeps the index's keys
            # until the erasure is through, so that an interrupted one is found again).
            FilterExpression="attribute_not_exists(erasure_id)",
            ExpressionAttributeValues={":account": {"S": ACCOUNT_PREFIX + account_id}},
            **options)
        last = page.get("LastEvaluatedKey")
        return CallPage(tuple(_call_from(item) for item in page.get("Items", [])),
                        encode_cursor(last) if last else None)

    # Erasure: the one way archived data leaves before its retention runs out.

    async def erasable(self, account_id: str, limit: int) -> list[str]:
        """Up to `limit` of the account's calls the archive still holds (or is erasing)."""
        page = await self._run(
            "query", TableName=self._table, IndexName="GSI1", Limit=limit,
            KeyConditionExpression="GSI1PK = :account", ProjectionExpression="PK",
            ExpressionAttributeValues={":account": {"S": ACCOUNT_PREFIX + account_id}})
        return [item["PK"]["S"].removeprefix("CALL#") for item in page.get("Items", [])]

    async def mark_erasing(self, call_identify_id: str, account_id: str, erasure_id: str,
                           live: tuple[ArchivedCall, Sequence[str]] | None) -> Mark:
        """Replace the call item by its tombstone (ids, times, the steps' hashes, the head),
        still in the account's index until `finish_erasure`, and count the call in the
        erasure's receipt, in one transaction; from then on nothing archives the call again.
        The hashes are the live trail's when Redis still holds the call (`live`: its call and
        steps), else the archived ones. A call id with nothing of it anywhere gets an empty
        tombstone all the same: an archiver that read the call just before it left Redis must
        not archive it after the erasure. Another account's call is left alone."""
        item = await self._call_item(call_identify_id)
        if item is not None and item["account_id"]["S"] != account_id:
            return "foreign"  # the id is another account's call (ids are reused over time)
        if item is not None and "erasure_id" in item:
            return "already"
        if live is not None:
            record: ArchivedCall | None = live[0]
            hashes = [link.hash for link in links_of(*live)]
        elif item is not None:
            record = _call_from(item)
            hashes = [row["hash"]["S"] for row in await self._step_rows(
                call_identify_id, ("SK", "hash")) if "hash" in row]
        else:
            record, hashes = None, []
        now = int(self._clock())
        created = record.created_at if record is not None else iso_time(now)
        updated = record.updated_at if record is not None else created
        tombstone = {
            **key(call_identify_id, CALL_SK),
            "account_id": {"S": account_id}, "erasure_id": {"S": erasure_id},
            "status": {"S": "erasing"}, "created_at": {"S": created},
            "updated_at": {"S": updated}, "step_count": {"N": str(len(hashes))},
            "hashes": {"B": b"".join(bytes.fromhex(value) for value in hashes)},
            "head": {"S": hashes[-1] if hashes else genesis(call_identify_id)},
            "erased_at": {"N": str(now)},
            "expires_at": {"N": str(now + self._retention_seconds)},
            "GSI1PK": {"S": ACCOUNT_PREFIX + account_id},
            "GSI1SK": {"S": f"{updated}#{call_identify_id}"},
        }
        had_data = record is not None
        reasons = await self._transact([
            {"Put": {"TableName": self._table, "Item": tombstone,
                     "ConditionExpression": "attribute_not_exists(erasure_id) AND "
                     "(attribute_not_exists(PK) OR account_id = :account)",
                     "ExpressionAttributeValues": {":account": {"S": account_id}}}},
            {"Update": {"TableName": self._table,
                        "Key": erasure_key(account_id, erasure_id),
                        "UpdateExpression": "ADD calls_erased :c, live_calls_erased :l, "
                        "steps_erased :s",
                        "ConditionExpression": "#status = :going",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": {
                            ":c": {"N": str(int(had_data))},
                            ":l": {"N": str(int(live is not None))},
                            ":s": {"N": str(len(hashes))},
                            ":going": {"S": "in_progress"}}}}])
        if reasons is None:
            return "marked"
        if reasons[1] == "ConditionalCheckFailed":
            return "closed"  # another request closed this erasure: the next one takes the call
        if reasons[0] == "ConditionalCheckFailed":
            return "already"  # marked meanwhile (or taken by another account: left alone)
        raise ArchiveUnavailable(f"call {call_identify_id}'s tombstone collided with another "
                                 f"write ({reasons}); the erasure goes on at its next request")

    async def finish_erasure(self, call_identify_id: str, account_id: str) -> int:
        """Delete every step item of a call this account's erasure marked, then take its
        tombstone off the account's index; how many items were deleted. Safe to repeat; does
        nothing to a call that is not this account's tombstone."""
        item = await self._call_item(call_identify_id)
        if (item is None or "erasure_id" not in item
                or item["account_id"]["S"] != account_id):
            return 0
        keys = await self._step_rows(call_identify_id, ("PK", "SK"))
        for at in range(0, len(keys), BATCH_WRITE):
            await self._delete_all(keys[at:at + BATCH_WRITE])
        with contextlib.suppress(_ConditionFailed):  # finished by another request meanwhile
            await self._run("update_item", TableName=self._table,
                            Key=key(call_identify_id, CALL_SK),
                            UpdateExpression="SET #status = :erased REMOVE GSI1PK, GSI1SK",
                            ConditionExpression="attribute_exists(erasure_id)",
                            ExpressionAttributeNames={"#status": "status"},
                            ExpressionAttributeValues={":erased": {"S": "erased"}})
        return len(keys)

    async def _delete_all(self, keys: list[dict[str, Any]]) -> None:
        requests = [{"DeleteRequest": {"Key": step_key}} for step_key in keys]
        for attempt in range(TRANSACTION_TRIES):
            done = await self._run("batch_write_item", RequestItems={self._table: requests})
            requests = done.get("UnprocessedItems", {}).get(self._table, [])
            if not requests:
                return
            await asyncio.sleep(0.05 * 2 ** attempt * random.random())
        raise ArchiveUnavailable(f"{len(requests)} step items could not be deleted (throttled); "
                                 "the erasure goes on at its next request")

    async def tombstone(self, call_identify_id: str) -> Tombstone | None:
        item = await self._call_item(call_identify_id)
        if item is None or "erasure_id" not in item:
            return None
        blob = bytes(item["hashes"]["B"])
        return Tombstone(call_identify_id, item["account_id"]["S"], item["erasure_id"]["S"],
                         item["status"]["S"] == "erased", item["created_at"]["S"],
                         item["updated_at"]["S"], int(item["erased_at"]["N"]),
                         item["head"]["S"],
                         tuple(blob[at:at + 32].hex() for at in range(0, len(blob), 32)))

    async def receipt(self, account_id: str) -> ErasureReceipt | None:
        """The account's latest erasure (going on, or done)."""
        found = await self._run("get_item", TableName=self._table, ConsistentRead=True,
                                Key=receipt_key(account_id))
        latest = found.get("Item")
        if latest is None:
            return None
        found = await self._run("get_item", TableName=self._table, ConsistentRead=True,
                                Key=erasure_key(account_id, latest["erasure_id"]["S"]))
        return receipt_from(found["Item"]) if "Item" in found else None

    async def start_erasure(self, account_id: str) -> ErasureReceipt:
        """A new erasure of the account (its own receipt item, and the account's pointer to
        its latest), unless one is going on: then that one."""
        receipt = ErasureReceipt(
            erasure_id=uuid.uuid4().hex, account_id=account_id, status="in_progress",
            calls_erased=0, live_calls_erased=0, steps_erased=0,
            started_at=iso_time(self._clock()), finished_at=None)
        reasons = await self._transact([
            {"Put": {"TableName": self._table, "Item": {
                **receipt_key(account_id), "erasure_id": {"S": receipt.erasure_id},
                "status": {"S": "in_progress"}},
                "ConditionExpression": "attribute_not_exists(SK) OR #status = :done",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {":done": {"S": "complete"}}}},
            {"Put": {"TableName": self._table, "Item": receipt_item(receipt)}}])
        if reasons is None:
            return receipt
        going = await self.receipt(account_id)
        if going is None:
            raise ArchiveUnavailable(f"account {account_id}'s erasure could not be started "
                                     f"({reasons}); retry")
        return going

    async def close_erasure(self, receipt: ErasureReceipt) -> ErasureReceipt:
        """Mark the erasure complete (its receipt, and the account's pointer), unless another
        request did; the receipt as it stands."""
        going = {":id": {"S": receipt.erasure_id}, ":going": {"S": "in_progress"}}
        await self._transact([
            {"Update": {"TableName": self._table, "Key": receipt_key(receipt.account_id),
                        "UpdateExpression": "SET #status = :done",
                        "ConditionExpression": "erasure_id = :id AND #status = :going",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": {**going, ":done": {"S": "complete"}}}},
            {"Update": {"TableName": self._table,
                        "Key": erasure_key(receipt.account_id, receipt.erasure_id),
                        "UpdateExpression": "SET #status = :done, finished_at = :at",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": {
                            ":done": {"S": "complete"},
                            ":at": {"S": iso_time(self._clock())}}}}])
        return await self.erasure(receipt.account_id, receipt.erasure_id)

    async def erasure(self, account_id: str, erasure_id: str) -> ErasureReceipt:
        found = await self._run("get_item", TableName=self._table, ConsistentRead=True,
                                Key=erasure_key(account_id, erasure_id))
        return receipt_from(found["Item"])

    async def _step_hash(self, call_identify_id: str, number: int) -> str | None:
        found = await self._run("get_item", TableName=self._table, ConsistentRead=True,
                                Key=key(call_identify_id, sk(number)))
        value = found.get("Item", {}).get("hash", {}).get("S")
        return value if isinstance(value, str) else None

    async def _put_steps(self, call_identify_id: str, links: Sequence[Link], now: int) -> None:
        """Write steps not yet archived, in one transaction that also checks the call was not
        erased (an archiver that read the call before an erasure must not write it back). A step
        already there is checked against its hash and left out of the next try; a transaction
        that collided with another archiver's is tried again a few times."""
        pending = list(links)
        expires = now + self._retention_seconds
        for attempt in range(TRANSACTION_TRIES):
            if not pending:
                return
            items = [(link, item) for link in pending
                     for item in step_items(call_identify_id, link, expires)]
            reasons = await self._transact([not_erased(self._table, call_identify_id)] + [
                {"Put": {"TableName": self._table, "Item": item,
                         "ConditionExpression": "attribute_not_exists(SK)"}}
                for _, item in items])
            if reasons is None:
                return
            if reasons[0] == "ConditionalCheckFailed":
                raise CallErased(f"call {call_identify_id} was erased; it is not archived again")
            there = list(dict.fromkeys(link for (link, _), why in zip(items, reasons[1:],
                                                                      strict=True)
                                       if why == "ConditionalCheckFailed"))
            for item in there:
                if await self._step_hash(call_identify_id, item.number) != item.hash:
                    raise ArchiveConflict(
                        f"step {item.number} of call {call_identify_id} is archived with "
                        "another content; it was left as it is")
            pending = [item for item in pending if item not in there]
            if not there:  # a collision with another writer: try again a little later
                await asyncio.sleep(0.05 * (attempt + 1) * random.random())
        if pending:
            raise ArchiveUnavailable(f"steps of call {call_identify_id} collided with other "
                                     f"writers {TRANSACTION_TRIES} times; not yet archived")

    async def _transact(self, actions: list[dict[str, Any]]) -> list[str] | None:
        """Run a transaction; None when it was applied, else each action's cancellation
        reason (`None` for an action that did not refuse it)."""
        try:
            await self._run("transact_write_items", TransactItems=actions)
        except _Cancelled as cancelled:
            return cancelled.reasons
        return None

    async def _put_call(self, call: ArchivedCall) -> None:
        item = {
            **key(call.call_identify_id, CALL_SK),
            "account_id": {"S": call.account_id}, "eci": {"S": call.eci},
            "current_flow_id": {"N": str(call.current_flow_id)},
            "completed_flows": {"S": json.dumps(list(call.completed_flows))},
            "status": {"S": call.status}, "created_at": {"S": call.created_at},
            "updated_at": {"S": call.updated_at}, "step_count": {"N": str(call.step_count)},
            "head": {"S": call.head}, "archived_at": {"N": str(call.archived_at)},
            "progress": {"S": call.progress},
            "expires_at": {"N": str(call.archived_at + self._retention_seconds)},
            "GSI1PK": {"S": ACCOUNT_PREFIX + call.account_id},
            "GSI1SK": {"S": f"{call.updated_at}#{call.call_identify_id}"},
        }
        try:
            await self._run("put_item", TableName=self._table, Item=item,
                            ConditionExpression=("(attribute_not_exists(PK) OR progress < :p) "
                                                 "AND attribute_not_exists(erasure_id)"),
                            ExpressionAttributeValues={":p": {"S": call.progress}},
                            ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except _ConditionFailed as refused:
            if "erasure_id" in refused.item:
                raise CallErased(f"call {call.call_identify_id} was erased; it is not "
                                 "archived again") from None
            # Else already as far as this, or further: it only moves forward.

    async def _run(self, operation: str, **arguments: Any) -> dict[str, Any]:
        method = getattr(self._client, operation)
        try:
            result: dict[str, Any] = await asyncio.to_thread(method, **arguments)
        except (ClientError, BotoCoreError) as exc:
            response = getattr(exc, "response", None)
            response = response if isinstance(response, dict) else {}
            code = response.get("Error", {}).get("Code")
            if code == "ConditionalCheckFailedException":
                raise _ConditionFailed(response.get("Item") or {}) from None
            if code == "TransactionCanceledException":
                raise _Cancelled([reason.get("Code", "None") for reason
                                  in response.get("CancellationReasons", [])]) from None
            raise ArchiveUnavailable(f"the archive table {self._table} could not be used: "
                                     f"{type(exc).__name__}") from exc
        return result


class _ConditionFailed(Exception):
    def __init__(self, item: dict[str, Any]) -> None:
        super().__init__("the conditional request failed")
        self.item = item  # what the item held, when the request asked for it


class _Cancelled(Exception):
    def __init__(self, reasons: list[str]) -> None:
        super().__init__(f"the transaction was cancelled: {reasons}")
        self.reasons = reasons


def _call_from(item: dict[str, Any]) -> ArchivedCall:
    status = item["status"]["S"]
    return ArchivedCall(
        item["PK"]["S"].removeprefix("CALL#"), item["account_id"]["S"], item["eci"]["S"],
        int(item["current_flow_id"]["N"]), tuple(json.loads(item["completed_flows"]["S"])),
        status if status in _STATUS_RANK else "active", item["created_at"]["S"],
        item["updated_at"]["S"], int(item["step_count"]["N"]), item["head"]["S"],
        int(item["archived_at"]["N"]))
