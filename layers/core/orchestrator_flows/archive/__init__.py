"""Call records that outlive Redis: the DynamoDB archive, its hash chain, and its readers."""

from orchestrator_flows.archive.chain import Link, Verdict, canonical, chained, genesis, verify
from orchestrator_flows.archive.store import (
    Archive,
    ArchiveConflict,
    ArchivedCall,
    ArchiveUnavailable,
    CallPage,
    DynamoArchive,
    InvalidCursor,
    verify_call,
)

__all__ = ["Archive", "ArchiveConflict", "ArchiveUnavailable", "ArchivedCall", "CallPage",
           "DynamoArchive", "InvalidCursor", "Link", "Verdict", "canonical", "chained",
           "genesis", "verify", "verify_call"]
