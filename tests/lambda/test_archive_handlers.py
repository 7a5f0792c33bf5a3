"""The archive's functions (list_calls, erase_account, the scheduled sweeper) invoked with their
`events/` fixtures as Lambda invokes them, with ARCHIVE_TABLE set: a real Redis, the real demo
agents, moto's DynamoDB. The story: a call is played through orchestrate, the sweeper archives
it and says so in its metrics, the account's list shows it, the erasure removes it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import orchestrator_flows.archive.sweeper as sweeper_module
from orchestrator_flows.local.invoke import load_function
from tests.support.archive_table import TABLE
from tests.support.events import ARCHIVE_FUNCTIONS, EVENTS, load_event

Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]
CALL = [f"call_0{n}_{name}" for n, name in enumerate(
    ("greeting", "verify_identity", "otp_verify", "refund_request", "process_refund",
     "end_call"), 1)]


def test_every_fixture_of_the_archive_functions_is_covered() -> None:
    on_disk = {(p.parent.name, p.stem) for p in EVENTS.glob("*/*.json")
               if p.parent.name in ARCHIVE_FUNCTIONS}
    assert on_disk == {(function, name) for function, name, *_ in STORY}


def emf(out: str) -> dict[str, Any]:
    """The metrics of the EMF blobs printed, by name (Powertools writes each as a list)."""
    found: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith('{"_aws"'):
            blob = json.loads(line)
            for metric in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                found[metric["Name"]] = blob[metric["Name"]]
    return found


# (function, fixture, what it answers: an HTTP status and error code, or the sweep's report)
STORY: list[tuple[str, str, Any]] = [
    ("list_calls", "page", (200, None)),  # not archived yet: a call is listed once archived
    ("sweeper", "bad_max_calls", {"refused": "detail.max_calls must be a whole number from 1 "
                                             "to 2000"}),
    ("sweeper", "bounded", {"archived": 1, "gone": 0, "failed": 0, "kept_alive": 0}),
    ("sweeper", "scheduled", {"archived": 0, "gone": 0, "failed": 0, "kept_alive": 0}),
    ("list_calls", "page", (200, None)),
    ("list_calls", "bad_cursor", (422, "invalid_cursor")),
    ("list_calls", "unknown_account", (200, None)),
    ("erase_account", "bad_account_id", (422, "invalid_request")),
    ("erase_account", "account", (200, None)),
    ("list_calls", "page", (200, None)),
]


@pytest.fixture
def archive_env(lambda_env: dict[str, str], dynamodb: Any, monkeypatch: pytest.MonkeyPatch,
                ) -> dict[str, str]:
    monkeypatch.setenv("ARCHIVE_TABLE", TABLE)
    # The sweeper leaves a call that fell due in the last 10 s to its commit; the story does
    # not wait 10 s of wall-clock time for it.
    monkeypatch.setattr(sweeper_module, "GRACE_MS", 0)
    return {**lambda_env, "ARCHIVE_TABLE": TABLE}


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_a_call_is_archived_listed_and_erased_through_the_functions(
    request: pytest.FixtureRequest, archive_env: dict[str, str], capsys: pytest.CaptureFixture[str],
    mode: str,
) -> None:
    invoke: Invoke = request.getfixturevalue(mode)
    for name in CALL:
        assert invoke("orchestrate", load_event("orchestrate", name))["statusCode"] == 200
    capsys.readouterr()
    answers = []
    for function, name, expected in STORY:
        response = invoke(function, load_event(function, name))
        out = capsys.readouterr().out
        if function == "sweeper":
            assert {key: response.get(key) for key in expected} == expected, (name, response)
            if "archived" in expected:
                metrics = emf(out)
                assert metrics["ArchivedCalls"] == [expected["archived"]]
                assert metrics["ArchiveFailures"] == [0]
                assert metrics["ArchiveLagSeconds"] == [0]  # nothing left due
            continue
        status, code = expected
        assert response["statusCode"] == status, (function, name, response)
        body = json.loads(response["body"])
        if code is not None:
            assert body["error"]["code"] == code
        answers.append(body)
    before, archived, _, unknown, _, erased, after = answers
    assert before["calls"] == []
    (call,) = archived["calls"]
    assert (call["call_identify_id"], call["status"], call["step_count"]) == (
        "EVT-CALL-001", "complete", 6)
    assert unknown == {"account_id": "ACC-NOBODY", "calls": [], "next_cursor": None}
    assert (erased["status"], erased["calls_erased"], erased["live_calls_erased"]) == (
        "complete", 1, 1)
    assert after["calls"] == []
    gone = invoke("get_session", load_event("get_session", "live"))
    assert gone["statusCode"] == 404


def test_the_sweeper_needs_its_table(lambda_env: dict[str, str]) -> None:
    from orchestrator_flows.errors import SettingsError

    with pytest.raises(SettingsError, match="ARCHIVE_TABLE"):
        load_function("sweeper", Path(__file__).resolve().parents[2] / "functions")


@pytest.mark.parametrize("function", ["sweeper", "orchestrate", "get_session"])
def test_every_function_registers_its_snapstart_hooks_at_init(
        archive_env: dict[str, str], function: str) -> None:
    """Each function's module, loaded as Lambda loads it, registers one hook before the
    snapshot and one after the restore, and both run."""
    import random

    import snapshot_restore_py

    from orchestrator_flows import snapshot

    before = len(snapshot_restore_py.get_before_snapshot())
    after = len(snapshot_restore_py.get_after_restore())
    load_function(function, Path(__file__).resolve().parents[2] / "functions")
    (closing,) = snapshot_restore_py.get_before_snapshot()[before:]
    (renewing,) = snapshot_restore_py.get_after_restore()[after:]
    assert (closing[0], renewing[0]) == (snapshot.before_snapshot, snapshot.after_restore)
    closing[0](*closing[1], **closing[2])
    state = random.getstate()
    renewing[0](*renewing[1], **renewing[2])
    assert random.getstate() != state
