"""The destination protocol: ``deliver(artifacts, target) -> DeliveryOutcome``.

Every destination type (``dicom``, ``dicomweb``, ``fhir``, ``hl7``) implements
:class:`Destination` and is found by its type name in
:mod:`worklist.destinations.registry`. A delivery attempt hands the job's
artifacts and the configured target to it; the outcome says whether the
artifacts were delivered, whether trying again later may succeed, and what the
peer answered. When and whether to try again is decided once, for every type,
by :mod:`worklist.destinations.retry` and :mod:`worklist.delivery`.

A destination never raises for a failure of the peer or the network: it
returns an outcome. It must be idempotent: delivering the same artifacts again
creates nothing twice at the peer (same SOP Instance UIDs for DICOM, conditional
FHIR interactions, the same MSH-10 Message Control ID for HL7 v2).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

__all__ = [
    "ArtifactFile",
    "DeliveryOutcome",
    "DeliveryStatus",
    "Destination",
    "DestinationTarget",
    "select_artifacts",
]


class DeliveryStatus(enum.StrEnum):
    """What became of one delivery attempt."""

    #: Every artifact the target takes is at the peer.
    DELIVERED = "delivered"
    #: Not (all) delivered; trying again later may succeed (peer down, 5xx, no ACK in time).
    RETRYABLE = "retryable"
    #: Not delivered; trying again gives the same answer: the operator must act.
    FINAL = "final"


@dataclass(frozen=True)
class ArtifactFile:
    """One produced object as a destination sees it.

    Attributes
    ----------
    kind
        The output kind (``"sr"``, ``"gsps"``, ``"csps"``, ``"sc"``, ``"kos"``,
        ``"fhir"``, ``"hl7"``).
    language
        BCP-47 tag of the object's text.
    object_uid
        SOP Instance UID, the FHIR Bundle's id, or the HL7 message's control ID:
        what a peer deduplicates on, and what a partial failure names.
    path
        The file (absolute).
    """

    kind: str
    language: str
    object_uid: str
    path: Path


@dataclass(frozen=True)
class DeliveryOutcome:
    """The outcome of one attempt; build with :meth:`delivered`, :meth:`retryable` or :meth:`final`.

    Attributes
    ----------
    status
        Delivered, retryable or final.
    answer
        One line for the operator: the peer's answer (DICOM status and comment,
        HTTP status and OperationOutcome summary, HL7 MSA/ERR) or what went wrong
        on the way. Kept in the database, never logged (a peer may echo patient data).
    log_text
        What goes to the log instead when ``answer`` quotes the peer: status codes only.
    peer_document
        The peer's whole answer where it has one worth keeping (a FHIR
        OperationOutcome, an HL7 ACK with its ERR segments), or None.
    retry_after
        The peer's ``Retry-After`` in seconds, or None: the next attempt waits at least this.
    remaining
        For a partial failure (STOW-RS storing some instances and refusing others with
        retryable reasons): the ``object_uid`` of each artifact still to send. Empty
        means all of them.
    """

    status: DeliveryStatus
    answer: str = ""
    log_text: str = ""
    peer_document: str | None = None
    retry_after: float | None = None
    remaining: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", DeliveryStatus(self.status))
        if self.status is not DeliveryStatus.DELIVERED and not self.answer:
            raise ValueError("a failed delivery outcome needs an answer for the operator")
        if self.remaining and self.status is not DeliveryStatus.RETRYABLE:
            raise ValueError("remaining artifacts only make sense for a retryable outcome")

    @classmethod
    def delivered(cls, answer: str = "") -> DeliveryOutcome:
        return cls(DeliveryStatus.DELIVERED, answer=answer)

    @classmethod
    def retryable(
        cls,
        answer: str,
        *,
        log_text: str = "",
        peer_document: str | None = None,
        retry_after: float | None = None,
        remaining: Sequence[str] = (),
    ) -> DeliveryOutcome:
        return cls(
            DeliveryStatus.RETRYABLE,
            answer=answer,
            log_text=log_text,
            peer_document=peer_document,
            retry_after=retry_after,
            remaining=tuple(remaining),
        )

    @classmethod
    def final(
        cls, answer: str, *, log_text: str = "", peer_document: str | None = None
    ) -> DeliveryOutcome:
        return cls(
            DeliveryStatus.FINAL, answer=answer, log_text=log_text, peer_document=peer_document
        )

    @property
    def ok(self) -> bool:
        return self.status is DeliveryStatus.DELIVERED

    @property
    def loggable(self) -> str:
        """What goes to the log: ``log_text``, else ``answer`` (a destination whose answer
        quotes the peer sets ``log_text``)."""
        return self.log_text or self.answer or self.status.value


class DestinationTarget(Protocol):
    """A configured destination (one ``[destinations.NAME]`` section), as a destination reads it."""

    @property
    def name(self) -> str:
        """The section's name (``PACS``, ``EHR``)."""
        ...

    @property
    def type(self) -> str:
        """The destination type (``dicom``, ``dicomweb``, ``fhir``, ``hl7``)."""
        ...

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output kinds it gets."""
        ...

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages it gets (BCP-47); empty = every language."""
        ...

    @property
    def retry_for_seconds(self) -> float | None:
        """How long a failing delivery keeps being retried; None = the policy's default."""
        ...


class Destination(Protocol):
    """One destination type: sends a job's artifacts to one configured target."""

    #: The type name the configuration uses (``type = "dicom"``).
    type: ClassVar[str]

    def deliver(
        self, artifacts: Sequence[ArtifactFile], target: DestinationTarget
    ) -> DeliveryOutcome:
        """Send the artifacts ``target`` takes (see :func:`select_artifacts`); never raises for
        a failure of the peer or the network."""
        ...


#: An output name in a destination's ``outputs`` → the artifact kinds it covers
#: (``gsps`` covers the Colour Softcopy PS made for colour sources).
_COVERED_KINDS: dict[str, tuple[str, ...]] = {"gsps": ("gsps", "csps")}


def select_artifacts(
    artifacts: Sequence[ArtifactFile], target: DestinationTarget
) -> list[ArtifactFile]:
    """The artifacts ``target`` takes: of its output kinds, in its languages (all when it names
    none)."""
    kinds = {
        kind
        for output in target.outputs
        for kind in _COVERED_KINDS.get(str(output), (str(output),))
    }
    return [
        a
        for a in artifacts
        if a.kind in kinds and (not target.languages or a.language in target.languages)
    ]
