"""What the node negotiates: storage SOP classes, transfer syntaxes and C-STORE statuses.

References: PS3.4 Annex B (Storage Service Class) for the status codes,
PS3.5 §10 and Annex A for the transfer syntaxes.
"""

from __future__ import annotations

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # (set via globals())

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "STORAGE_SOP_CLASSES",
    "StoreStatus",
    "contexts_preferring_requestor",
    "scp_contexts",
]

#: Transfer syntaxes the SCP accepts; instances are stored in the one they arrive in.
ACCEPTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
    UID("1.2.840.10008.1.2.8.1"),  # Deflated Image Frame Compression (PS3.5 §A.4.11)
    UID("1.2.840.10008.1.2.4.110"),  # JPEG XL Lossless
    UID("1.2.840.10008.1.2.4.111"),  # JPEG XL JPEG Recompression
    UID("1.2.840.10008.1.2.4.112"),  # JPEG XL
)

#: Every storage SOP class pynetdicom knows (PS3.4 Annex B.5).
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    str(cx.abstract_syntax) for cx in AllStoragePresentationContexts
)


class StoreStatus:
    """C-STORE response statuses (PS3.4 Table B.2-1, PS3.7 Annex C)."""

    SUCCESS = 0x0000
    #: Refused: Out of Resources — the sender should retry later.
    OUT_OF_RESOURCES = 0xA700
    #: Error: Data Set does not match SOP Class (missing/invalid identifying attributes).
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Error: Cannot understand — the data set could not be parsed.
    CANNOT_UNDERSTAND = 0xC000
    #: Failure: Duplicate SOP Instance (PS3.7 C.4.2) — reject-duplicates policy.
    DUPLICATE_SOP_INSTANCE = 0x0111
    #: Failure: Processing failure.
    PROCESSING_FAILURE = 0x0110
    #: Failure: SOP Class not supported.
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: Error: Referenced Transfer Syntax not supported (PS3.18 Table I.2-2; a STOW-RS Failure
    #: Reason: C-STORE negotiation never accepts such a syntax).
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122


def scp_contexts() -> list[PresentationContext]:
    """Presentation contexts the SCP supports: Verification and all storage
    SOP classes, each with :data:`ACCEPTED_TRANSFER_SYNTAXES`."""
    contexts = []
    for abstract_syntax in (Verification, *STORAGE_SOP_CLASSES):
        cx = PresentationContext()
        cx.abstract_syntax = abstract_syntax
        cx.transfer_syntax = list(ACCEPTED_TRANSFER_SYNTAXES)
        contexts.append(cx)
    return contexts


_ACCEPTED = frozenset(ACCEPTED_TRANSFER_SYNTAXES)
_SUPPORTED_ABSTRACT = frozenset((str(Verification), *STORAGE_SOP_CLASSES))


def contexts_preferring_requestor(
    requested: list[PresentationContext],
) -> list[PresentationContext]:
    """Supported contexts for one association that honour the requestor's order.

    pynetdicom picks, for each proposed context, the first transfer syntax in
    the *acceptor's* list that the requestor proposed. A sender that proposes
    ``[JPEG Lossless, Explicit VR Little Endian]`` for a JPEG file would then be
    made to decompress it (dcmtk cannot, and the stored bytes would differ from
    the original); a sender proposing ``[Explicit VR, JPEG lossy]`` for an
    uncompressed file would be made to compress it lossily. Ordering our list
    by the requestor's own preference stores every instance as the sender has it.
    """
    by_abstract: dict[str, list[str]] = {}
    for context in requested:
        abstract = str(context.abstract_syntax)
        if abstract not in _SUPPORTED_ABSTRACT:
            continue
        syntaxes = by_abstract.setdefault(abstract, [])
        for syntax in context.transfer_syntax:
            if syntax in _ACCEPTED and syntax not in syntaxes:
                syntaxes.append(syntax)
    contexts = []
    for abstract, syntaxes in by_abstract.items():
        if syntaxes:
            cx = PresentationContext()
            cx.abstract_syntax = abstract
            cx.transfer_syntax = [*syntaxes]
            contexts.append(cx)
    return contexts
