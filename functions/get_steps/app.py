"""GET /session/{call_identify_id}/steps: the audit trail."""

from orchestrator_flows.lambda_app import build_handler

handler = build_handler("get_steps")
