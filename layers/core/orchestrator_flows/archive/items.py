"""How the archive's records are laid out as DynamoDB items, in one table per stack (one
partition per call, so a call is read with one Query in step order):

- the call: PK `CALL#<id>`, SK `CALL`; account_id, eci, current_flow_id, completed_flows,
  status, created_at, updated_at, step_count, head, archived_at, progress; GSI1PK
  `ACCOUNT#<account>`, GSI1SK `<updated_at>#<id>`. Once erased, its tombstone: account_id,
  erasure_id, status (erasing, erased), times, step_count, hashes (32 bytes each), head.
- a step: PK `CALL#<id>`, SK `STEP#000001`; step (its canonical JSON, masked as stored), hash;
  a long step goes on in `STEP#000001.1`, `.2` ….
- an erasure: PK `ACCOUNT#<account>`, SK `ERASURE#<id>` (its receipt); SK `ERASURE`, the
  account's pointer to its latest.

Every call and step item carries `expires_at` (epoch seconds, the table's TTL attribute). The
account index (GSI1, sparse: only call items have its keys) lists an account's calls newest
first.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator_flows.archive.chain import Link
from orchestrator_flows.errors import InvalidCursor
from orchestrator_flows.records import ErasureReceipt

CALL_SK = "CALL"
STEP_PREFIX = "STEP#"
ACCOUNT_PREFIX = "ACCOUNT#"
# A cursor holds a call item's key: an id of 128 characters and a time, twice over at most.
MAX_CURSOR_BYTES = 600
ERASURE_SK = "ERASURE"  # an account's pointer to its latest erasure; each one is ERASURE#<id>
# A transaction writes up to STEPS_PER_WRITE steps (conditional Puts, and a check that the call
# was not erased), within DynamoDB's 100 actions and 4 MB: at most TRANSACTION_BYTES of step
# text. A step longer than PART_BYTES (an agent may answer up to 1 MiB) is written as several
# items, `STEP#000001` (with the hash) then `STEP#000001.1`, `.2` …, each within the 400 KB
# an item may hold. A BatchWriteItem takes 25 at most.
STEPS_PER_WRITE = 25
PART_BYTES = 300_000
TRANSACTION_BYTES = 3_000_000
TRANSACTION_TRIES = 5
BATCH_WRITE = 25



def parts(text: str) -> list[str]:
    """`text` cut into pieces of at most PART_BYTES in UTF-8, never inside a character."""
    data = text.encode()
    if len(data) <= PART_BYTES:
        return [text]
    parts, at = [], 0
    while at < len(data):
        cut = min(len(data), at + PART_BYTES)
        while cut < len(data) and data[cut] & 0xC0 == 0x80:  # a continuation byte
            cut -= 1
        parts.append(data[at:cut].decode())
        at = cut
    return parts


def step_items(call_identify_id: str, link: Link, expires: int) -> list[dict[str, Any]]:
    """The items of one step: the first holds the hash; more only for a long step."""
    first, *rest = parts(link.step)
    items: list[dict[str, Any]] = [{
        **key(call_identify_id, sk(link.number)), "step": {"S": first},
        "hash": {"S": link.hash}, "expires_at": {"N": str(expires)}}]
    items += [{**key(call_identify_id, f"{sk(link.number)}.{number}"), "step": {"S": part},
               "expires_at": {"N": str(expires)}} for number, part in enumerate(rest, 1)]
    return items


def transactions(links: Sequence[Link]) -> list[list[Link]]:
    """Steps grouped into transactions of at most STEPS_PER_WRITE steps and TRANSACTION_BYTES."""
    groups: list[list[Link]] = []
    size = 0
    for link in links:
        length = len(link.step.encode())
        if not groups or len(groups[-1]) == STEPS_PER_WRITE or size + length > TRANSACTION_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(link)
        size += length
    return groups


def not_erased(table: str, call_identify_id: str) -> dict[str, Any]:
    """A transaction's check that the call has no tombstone."""
    return {"ConditionCheck": {"TableName": table, "Key": key(call_identify_id, CALL_SK),
                               "ConditionExpression": "attribute_not_exists(erasure_id)"}}


def pk(call_identify_id: str) -> str:
    return f"CALL#{call_identify_id}"


def sk(number: int) -> str:
    return f"{STEP_PREFIX}{number:06d}"


def key(call_identify_id: str, sort_key: str) -> dict[str, dict[str, str]]:
    return {"PK": {"S": pk(call_identify_id)}, "SK": {"S": sort_key}}


def encode_cursor(last: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(
        {"c": last["PK"]["S"], "u": last["GSI1SK"]["S"]}, separators=(",", ":")).encode()
    ).decode().rstrip("=")


def decode_cursor(cursor: str, account_id: str) -> dict[str, Any]:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if len(decoded) > MAX_CURSOR_BYTES:  # longer than any this route gives (or parses)
            raise ValueError
        raw = json.loads(decoded)
        pk, sort = raw["c"], raw["u"]
        # The key of a call item of this account's index, as `_encode_cursor` wrote it.
        if not (isinstance(pk, str) and isinstance(sort, str) and pk.startswith("CALL#")
                and sort.endswith("#" + pk.removeprefix("CALL#"))):
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
        raise InvalidCursor("the cursor is not one this route gave; start again without "
                            "one") from exc
    return {"PK": {"S": pk}, "SK": {"S": CALL_SK},
            "GSI1PK": {"S": ACCOUNT_PREFIX + account_id}, "GSI1SK": {"S": sort}}


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def receipt_key(account_id: str) -> dict[str, dict[str, str]]:
    """The account's pointer to its latest erasure."""
    return {"PK": {"S": ACCOUNT_PREFIX + account_id}, "SK": {"S": ERASURE_SK}}


def erasure_key(account_id: str, erasure_id: str) -> dict[str, dict[str, str]]:
    return {"PK": {"S": ACCOUNT_PREFIX + account_id}, "SK": {"S": f"{ERASURE_SK}#{erasure_id}"}}


def receipt_item(receipt: ErasureReceipt) -> dict[str, Any]:
    return {
        **erasure_key(receipt.account_id, receipt.erasure_id),
        "erasure_id": {"S": receipt.erasure_id},
        "account_id": {"S": receipt.account_id}, "status": {"S": receipt.status},
        "calls_erased": {"N": str(receipt.calls_erased)},
        "live_calls_erased": {"N": str(receipt.live_calls_erased)},
        "steps_erased": {"N": str(receipt.steps_erased)},
        "started_at": {"S": receipt.started_at}}


def receipt_from(item: dict[str, Any]) -> ErasureReceipt:
    return ErasureReceipt(
        erasure_id=item["erasure_id"]["S"], account_id=item["account_id"]["S"],
        status="complete" if item["status"]["S"] == "complete" else "in_progress",
        calls_erased=int(item["calls_erased"]["N"]),
        live_calls_erased=int(item["live_calls_erased"]["N"]),
        steps_erased=int(item["steps_erased"]["N"]), started_at=item["started_at"]["S"],
        finished_at=item["finished_at"]["S"] if "finished_at" in item else None)
