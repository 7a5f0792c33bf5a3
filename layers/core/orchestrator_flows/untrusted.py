"""JSON that others wrote (a caller's body, an agent's answer or card), parsed so that however
deep it nests, the depth stays with the parser.

`json.loads` recurses once per level of nesting, so a document of 50,000 `[` takes the stack to
Python's recursion limit before it fails with RecursionError (which the callers turn into a 4xx or
`agent_bad_response`). The parser allocates a list or dict per level, and an allocation may start
the cyclic collector: a collection that starts there runs the finalizers of whatever garbage is
pending (an unclosed transport, a coroutine, a pooled connection) with no stack left, and they
fail, their clean-up lost, with "Exception ignored" on stderr. So the collector is paused while
the parser runs, and collects at the next allocation after it, at the caller's depth.
"""

from __future__ import annotations

import gc
import json
from typing import Any


def loads(document: bytes | str, **options: Any) -> Any:
    """`json.loads(document, **options)` with the cyclic collector paused while it runs.

    Called on the event loop's thread, as every parse of outside JSON here is: the collector is
    process-wide, and a second thread's parse could end the pause of the first."""
    if not gc.isenabled():
        return json.loads(document, **options)
    gc.disable()
    try:
        return json.loads(document, **options)
    finally:
        gc.enable()
