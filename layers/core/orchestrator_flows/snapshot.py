"""Lambda SnapStart: what a restored snapshot must not carry over.

With SnapStart, Lambda runs a version's init once, snapshots the memory, and starts every later
execution environment of that version from the snapshot, possibly many at once and days later.
Whatever init left in memory is shared by all of them, so:

- `random`'s state would be the same in every restored environment: each would draw the same
  claim tokens (the session store's fencing, `random.getrandbits`) and the same retry jitter.
  It is reseeded from the OS after each restore.
- Pooled connections (Redis, the agents' HTTP, the token endpoints') are closed before the
  snapshot: a socket does not survive one, and a restored pool would hand out dead connections.
- Kept credentials (agent secrets and OAuth tokens, Powertools' parameter providers and their
  boto3 clients, the archive's boto3 resource, the cache's IAM token) are forgotten after
  restore: a snapshot outlives a secret's rotation and a token's 15 minutes, and a boto3 client
  built at init holds the init's credentials.

The hooks are registered with the runtime's `snapshot_restore_py` (preinstalled in the Python
managed runtimes; the PyPI package of the same name is its local stand-in). They are plain
functions: the tests call them as the runtime does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator_flows.runtime import Runtime

logger = logging.getLogger(__name__)


def before_snapshot(runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
    """Close every pooled connection, on the loop that opened them (not running: init is over)."""
    loop.run_until_complete(runtime.drop_connections())


def after_restore(runtime: Runtime) -> None:
    """Fresh randomness, and no credentials or connections from before the snapshot. No I/O:
    what was forgotten is fetched again on first use, inside an invocation's deadline."""
    random.seed()  # from os.urandom
    runtime.forget_credentials()
    parameters = sys.modules.get("aws_lambda_powertools.utilities.parameters.base")
    if parameters is not None:  # only a process whose agents read secrets imported it
        parameters.clear_caches()


def register(runtime: Runtime, loop: asyncio.AbstractEventLoop) -> bool:
    """Register the hooks with the runtime; False where there is no runtime to register with
    (a local run, or a runtime without SnapStart)."""
    try:
        import snapshot_restore_py
    except ImportError:
        if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
            logger.warning("SnapStart init without snapshot_restore_py: connections and "
                           "credentials will not be renewed after restore")
        return False
    snapshot_restore_py.register_before_snapshot(before_snapshot, runtime, loop)
    snapshot_restore_py.register_after_restore(after_restore, runtime)
    return True
