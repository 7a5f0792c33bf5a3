"""The cache's IAM token: SigV4 as botocore signs it, kept and renewed on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from orchestrator_flows.errors import SettingsError
from orchestrator_flows.kv.iam_auth import AwsCredentials, IamAuth, presign_connect
from orchestrator_flows.settings import Settings

CREDENTIALS = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                             "session/token+with=odd&chars")
AT = datetime(2026, 12, 5, 9, 30, 15, tzinfo=UTC)


def botocore_token(monkeypatch: pytest.MonkeyPatch, at: datetime) -> str:
    """The same request, presigned by botocore itself at `at`."""
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: at.replace(tzinfo=None))
    request = AWSRequest(method="GET", url="http://of-dev-1234abcd/", params={
        "Action": "connect", "User": "orchestrator-flows-dev",
        "ResourceType": "ServerlessCache"})
    signer = SigV4QueryAuth(Credentials(CREDENTIALS.access_key, CREDENTIALS.secret_key,
                                        CREDENTIALS.session_token),
                            "elasticache", "eu-west-1", expires=900)
    signer.add_auth(request)
    url: str = request.prepare().url
    return url.removeprefix("http://")


def query(token: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(f"http://{token}").query, strict_parsing=True)


def test_the_token_is_the_presigned_connect_botocore_would_sign(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ours = presign_connect(cache_name="of-dev-1234abcd", user_id="orchestrator-flows-dev",
                           region="eu-west-1", credentials=CREDENTIALS, at=AT)
    theirs = botocore_token(monkeypatch, AT)
    assert ours.startswith("of-dev-1234abcd/?")
    assert query(ours) == query(theirs)  # the signature among them
    assert query(ours)["X-Amz-Expires"] == ["900"]
    assert query(ours)["X-Amz-Security-Token"] == [CREDENTIALS.session_token]
    # a second later, another signature
    later = presign_connect(cache_name="of-dev-1234abcd", user_id="orchestrator-flows-dev",
                            region="eu-west-1", credentials=CREDENTIALS,
                            at=AT.replace(second=16))
    assert query(later)["X-Amz-Signature"] != query(ours)["X-Amz-Signature"]


def test_a_token_is_kept_then_renewed_before_it_expires() -> None:
    now = [AT.timestamp()]
    asked = []

    def credentials() -> AwsCredentials:
        asked.append(now[0])
        return CREDENTIALS

    auth = IamAuth(cache_name="of-dev-1234abcd", user_id="orchestrator-flows-dev",
                   region="eu-west-1", credentials=credentials, clock=lambda: now[0])
    first = auth.get_credentials()
    assert first[0] == "orchestrator-flows-dev"
    now[0] += 599  # within its first ten minutes: the same token
    assert auth.get_credentials() == first
    now[0] += 1  # five minutes before its 15 expire: a new one, signed now
    _user, renewed = auth.get_credentials()
    assert renewed != first[1]
    assert query(renewed)["X-Amz-Date"] == ["20261205T094015Z"]
    assert len(asked) == 2
    auth.forget()  # a SnapStart restore: signed anew (the same second: the same signature)
    assert auth.token() == renewed
    assert len(asked) == 3


@pytest.mark.parametrize(("env", "message"), [
    ({"REDIS_IAM_USER": "of-user"}, "go together"),
    ({"REDIS_IAM_USER": "of-user", "REDIS_CACHE_NAME": "of-dev-1"}, "needs AWS_REGION"),
    ({"REDIS_IAM_USER": "of-user", "REDIS_CACHE_NAME": "of-dev-1", "AWS_REGION": "eu-west-1",
      "REDIS_URL": "redis://cache:6379"}, "needs a rediss:// REDIS_URL"),
    ({"REDIS_IAM_USER": "Of User", "REDIS_CACHE_NAME": "of-dev-1"}, "REDIS_IAM_USER"),
])
def test_iam_settings_that_cannot_authenticate_are_refused(env: dict[str, str],
                                                           message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"REDIS_URL": "rediss://cache:6379", **env}, deployed=True)


def test_the_credential_chain_is_resolved_once_and_again_after_a_restore(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFIRST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    auth = IamAuth(cache_name="of-dev-1234abcd", user_id="orchestrator-flows-dev",
                   region="eu-west-1", clock=lambda: AT.timestamp())
    assert "AKIDFIRST" in auth.token()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDRESTORED")  # a restored environment's
    assert "AKIDFIRST" in auth.token()  # kept (and the token with it)
    auth.forget()
    assert "AKIDRESTORED" in auth.token()
