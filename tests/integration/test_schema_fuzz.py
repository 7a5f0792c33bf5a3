"""schemathesis against the app's own OpenAPI schema: the whole app the local server runs, and
each Lambda function's app (its routes only), called through ASGI, with an archive (moto's
DynamoDB) so that the account routes and the archive's fallbacks are fuzzed too. Zero 5xx, and
every response matches the schema — status codes, content types and bodies."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, cast

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from orchestrator_flows.api import ALL_ROUTES, FUNCTIONS, RouteName, create_app
from orchestrator_flows.runtime import Runtime, Storage
from orchestrator_flows.settings import Settings
from tests.support.archive_table import TABLE
from tests.support.scripted import ScriptedAgents

# A body over 64 KiB is refused with the documented 413 before it is parsed: that is invalid data
# rejected, as much as a 422 is. (The seed is the run's own, set in tests/conftest.py.)
CONFIG = {"checks": {"negative_data_rejection": {"expected-statuses": [
    400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]}}}


def schema_of(routes: Collection[RouteName]) -> schemathesis.BaseSchema:
    # The archive's boto3 client is made on first use, inside a test's mock_aws.
    runtime = Runtime.build(Settings(archive_table=TABLE), storage=Storage.embedded(),
                            agents=ScriptedAgents())
    return schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(runtime, routes),
        config=SchemathesisConfig.from_dict(CONFIG))


def fuzz(schema: schemathesis.BaseSchema) -> Callable[..., None]:
    @schema.parametrize()
    # One archive table for all of a test's examples, as one deployment has (what an example
    # writes, the next may read): hence a function-scoped fixture across examples.
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.function_scoped_fixture])
    def test(case: schemathesis.Case[Any], dynamodb: Any) -> None:
        # A schema-valid turn may still be refused by the flow (another stage's intent, another
        # account, a complete call): those refusals are documented answers, not rejections of
        # valid data, so that one check is left out; every other one runs.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    return cast(Callable[..., None], test)


test_the_local_server_s_app = fuzz(schema_of(ALL_ROUTES))
test_the_orchestrate_function = fuzz(schema_of(FUNCTIONS["orchestrate"]))
test_the_get_session_function = fuzz(schema_of(FUNCTIONS["get_session"]))
test_the_get_steps_function = fuzz(schema_of(FUNCTIONS["get_steps"]))
test_the_delete_session_function = fuzz(schema_of(FUNCTIONS["delete_session"]))
test_the_list_calls_function = fuzz(schema_of(FUNCTIONS["list_calls"]))
test_the_erase_account_function = fuzz(schema_of(FUNCTIONS["erase_account"]))
