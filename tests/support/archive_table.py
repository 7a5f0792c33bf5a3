"""The archive table in moto's DynamoDB, shaped as the stack defines it (keys, the account
index, the TTL attribute)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

TABLE = "orchestrator-flows-archive"


def create_archive_table(client: Any, name: str = TABLE) -> None:
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"}
                              for n in ("PK", "SK", "GSI1PK", "GSI1SK")],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"},
                   {"AttributeName": "SK", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "GSI1", "Projection": {"ProjectionType": "ALL"},
            "KeySchema": [{"AttributeName": "GSI1PK", "KeyType": "HASH"},
                          {"AttributeName": "GSI1SK", "KeyType": "RANGE"}]}])
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": "expires_at"})


def one_request_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto handles each request in the calling thread, and its DynamoDB backend is not
    thread-safe: a TransactWriteItems deep-copies the table while another thread's PutItem
    changes it ("dictionary changed size during iteration", seen when the archive's worker
    threads write at once). DynamoDB itself applies each request atomically; so does moto under
    one lock per process."""
    from moto.core.botocore_stubber import BotocoreStubber

    handle = BotocoreStubber.process_request
    lock = threading.Lock()

    def atomically(self: BotocoreStubber, request: Any) -> Any:
        with lock:
            return handle(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", atomically)


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's DynamoDB in this process, with the archive table."""
    from moto import mock_aws

    one_request_at_a_time(monkeypatch)
    for name, value in (("AWS_DEFAULT_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_SESSION_TOKEN", "testing")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("dynamodb")
        create_archive_table(client)
        yield client
