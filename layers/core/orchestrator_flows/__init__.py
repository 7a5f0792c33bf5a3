"""Orchestrator Flows: the core layer (flow engine, session store, A2A client, HTTP API)."""

__version__ = "0.1.0"
