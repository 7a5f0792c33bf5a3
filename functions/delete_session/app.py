"""DELETE /session/{call_identify_id}: end the call."""

from orchestrator_flows.lambda_app import build_handler

handler = build_handler("delete_session")
