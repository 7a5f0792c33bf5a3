"""`orchestrator-flows invoke`: a Lambda function's handler loaded and invoked as Lambda would,
with an `events/` fixture (what `sam local invoke` does, without Docker)."""

from __future__ import annotations

import importlib.util
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType


@dataclass
class LocalContext:
    """What the Lambda runtime passes as `context`, for one local invocation."""

    function_name: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    timeout_seconds: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:eu-west-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_function(name: str, functions_dir: Path = Path("functions")) -> ModuleType:
    """Import `functions/<name>/app.py` afresh, as a new execution environment would."""
    path = functions_dir / name / "app.py"
    if not path.is_file():
        known = sorted(p.parent.name for p in functions_dir.glob("*/app.py"))
        raise InvokeError(f"no function {name!r} at {path}; known: {known}")
    spec = importlib.util.spec_from_file_location(f"lambda_{name}_{uuid.uuid4().hex}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InvokeError(Exception):
    """A local invocation that cannot start: the message names the file and the problem."""


def read_env_file(path: Path, function: str) -> dict[str, str]:
    """The environment a file gives `function`: `sam local invoke`'s env.json (JSON: a
    `Parameters` object for every function, then one per function's logical id or name), or
    KEY=VALUE lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvokeError(f"{path}: cannot read: {exc.strerror}") from None
    if text.lstrip().startswith("{"):
        return _from_env_json(path, text, function)
    values = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise InvokeError(f"{path}:{number}: expected KEY=VALUE")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def _from_env_json(path: Path, text: str, function: str) -> dict[str, str]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvokeError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise InvokeError(f"{path}: expected an object of objects, as sam local invoke reads")
    wanted = {"Parameters", function, _logical_id(function)}
    values: dict[str, str] = {}
    for section in ("Parameters", *sorted(set(document) & (wanted - {"Parameters"}))):
        variables = document.get(section, {})
        if not isinstance(variables, dict):
            raise InvokeError(f"{path}: {section} must be an object of variables")
        values.update({str(k): str(v) for k, v in variables.items()})
    return values


def _logical_id(function: str) -> str:
    """`get_session` -> `GetSessionFunction`, the prefix of the template's logical id."""
    return "".join(part.title() for part in function.split("_")) + "Function"


def read_event(path: Path) -> dict[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvokeError(f"{path}: cannot read the event: {exc.strerror}") from None
    try:
        event = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvokeError(f"{path}:{exc.lineno}:{exc.colno}: the event is not JSON: "
                          f"{exc.msg}") from None
    if not isinstance(event, dict):
        raise InvokeError(f"{path}: the event must be a JSON object")
    return event


def file_fills_the_rest(variables: dict[str, str],
                        shell: Mapping[str, str]) -> dict[str, str]:
    """What the env file sets: what the invoking shell does not. `ARCHIVE_TABLE=t
    orchestrator-flows invoke … --env-file events/env.json` overrides the file's empty
    ARCHIVE_TABLE, as a variable given on the command line overrides a default."""
    return {key: value for key, value in variables.items() if key not in shell}


def local_invoke(name: str, event_path: Path, env_file: Path | None, functions_dir: Path) -> int:
    """Load the handler as Lambda would (a fresh import, the function's environment), invoke it
    once, print what it returned. This process's environment is the function's: set before
    the import, as Lambda sets it before init."""
    event = read_event(event_path)
    variables = read_env_file(env_file, name) if env_file is not None else {}
    os.environ.update(file_fills_the_rest(variables, os.environ))
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon here
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", name)
    handler = load_function(name, functions_dir).handler
    response = handler(event, LocalContext(function_name=name))
    print(json.dumps(response, indent=2))
    return 0
