"""Document signatures: CAdES and PAdES made with the phone's signature key, RFC 3161 timestamps,
signed-document assertions, and verification for anyone.

The flow that talks to the phone uses ``SigningService`` (one per application): ``prepare_*``
returns a pending state to keep in the ephemeral store (``to_bytes`` / ``from_bytes``) and the
digest the secure element signs (``to_be_signed``); ``finish_*`` takes the phone's signature and
returns the signature or signed PDF; ``make_assertion`` states the result to the RP. The pure
steps live in ``cades``, ``pades``, ``assertion``, ``verification`` and ``timestamping``.
"""

from idp.signing.assertion import ASSERTION_TYPE, SignedDocument, make_assertion, verify_assertion
from idp.signing.cades import PendingCades, finish_cades, prepare_cades
from idp.signing.errors import Reason, SigningRejected
from idp.signing.pades import PendingPades, finish_pades, prepare_pades
from idp.signing.service import SigningService
from idp.signing.signer import SignerChain
from idp.signing.timestamping import TimestampAuthority
from idp.signing.verification import Verification, verify_cades, verify_pades

__all__ = [
    "ASSERTION_TYPE",
    "PendingCades",
    "PendingPades",
    "Reason",
    "SignedDocument",
    "SignerChain",
    "SigningRejected",
    "SigningService",
    "TimestampAuthority",
    "Verification",
    "finish_cades",
    "finish_pades",
    "make_assertion",
    "prepare_cades",
    "prepare_pades",
    "verify_assertion",
    "verify_cades",
    "verify_pades",
]
