"""Orchestrator Flows: the core layer (flow engine, session store, A2A client, HTTP API)."""
