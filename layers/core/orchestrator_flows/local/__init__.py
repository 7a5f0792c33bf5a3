"""Local runs only, never in the Lambda layer: the `orchestrator-flows` command (`cli`), the
demo agents, serving with uvicorn, and Lambda emulation for `invoke`."""
