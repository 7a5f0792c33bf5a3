"""GET /accounts/{account_id}/calls: an account's archived calls, newest first."""

from orchestrator_flows.lambda_app import build_handler

handler = build_handler("list_calls")
