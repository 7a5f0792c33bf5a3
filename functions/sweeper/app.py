"""The sweeper (scheduled): archives the calls that are due, a bounded number per run."""

from orchestrator_flows.lambda_sweeper import build_sweeper_handler

handler = build_sweeper_handler()
