"""GET /session/{call_identify_id}: the session state; GET /healthz: liveness."""

from orchestrator_flows.lambda_app import build_handler

handler = build_handler("get_session")
