"""The HTTP API (DESIGN §2) in FastAPI.

- `routes`: the route table, the functions that serve each route, and how each is added to an app
- `models`: the turn request and the error body (success bodies are `records`)
- `limits`: what is bounded before anything parses a request
- `errors`: the one mapping of errors to HTTP status codes and error codes
- `app`: `create_app(runtime, routes=…)`, all routes (local server) or a function's own
"""

from orchestrator_flows.api.app import create_app
from orchestrator_flows.api.models import error_body
from orchestrator_flows.api.routes import ALL_ROUTES, FUNCTIONS, ROUTES, RouteName

__all__ = ["ALL_ROUTES", "FUNCTIONS", "ROUTES", "RouteName", "create_app", "error_body"]
