"""DELETE /accounts/{account_id}/data: erase every call of an account, a batch per request."""

from orchestrator_flows.lambda_app import build_handler

handler = build_handler("erase_account")
