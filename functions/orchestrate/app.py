"""POST /orchestrate: one turn of a call."""

from orchestrator_flows.lambda_app import build_handler

handler = build_handler("orchestrate")
