"""The tamper-evident audit log: an append-only chain of records, each carrying the previous hash.

``AuditLog.append`` / ``append_in`` write a record (in a transaction of its own, or in the
caller's, beside the change it records); ``AuditLog.verify`` finds the first broken link;
``AuditLog.export`` reads the records for ``idp audit export``. docs/audit.md describes the
record, the hash and what is (and is never) recorded.
"""

from idp.audit.chain import GENESIS_HASH, AuditEntry, BrokenLink, ChainReport, Head, Reason, check_chain, record_hash
from idp.audit.events import AuditEvent, InvalidAuditRecord, certificate_subject
from idp.audit.log import AuditLog, append_in

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "BrokenLink",
    "ChainReport",
    "Head",
    "InvalidAuditRecord",
    "Reason",
    "append_in",
    "certificate_subject",
    "check_chain",
    "record_hash",
]
