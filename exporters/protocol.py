"""The exporter protocol: what every output kind declares and builds.

An exporter turns a :class:`~engine.report.GroundedReport`, the headers of its
source images and the job's one :class:`~exporters.regions.RegionPlan` into
:class:`Artifact` values (DICOM datasets, a FHIR Bundle, an HL7 message).
Each exporter is a package per IOD or message (``exporters/sr``,
``exporters/pr``, ``exporters/sc``, ``exporters/kos``, ``exporters/fhir``,
``exporters/hl7``) that declares its :class:`OutputKind` and the SOP classes it
writes, and is listed once in :mod:`exporters.registry`. Adding an output
kind is one new package plus one registry entry (and an :class:`OutputKind`
member).

This module is light (no highdicom, no FHIR models): settings import it to
parse output names.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import TYPE_CHECKING, ClassVar, Protocol

from pydicom.dataset import Dataset

from exporters.errors import ExportError

if TYPE_CHECKING:
    from engine.report import Finding, GroundedReport
    from exporters.regions import RegionPlan

__all__ = [
    "DICOM_MEDIA_TYPE",
    "Artifact",
    "ExportOptions",
    "Exporter",
    "OutputKind",
    "PredecessorDocument",
    "SignOff",
    "UnknownOutputKindError",
    "Verifier",
    "parse_output_kind",
]

#: Media type of a DICOM Part 10 file (PS3.18 §8.7.3).
DICOM_MEDIA_TYPE = "application/dicom"


class OutputKind(enum.StrEnum):
    """The kinds of object RadGround produces; the values are the names used in
    the configuration (``outputs = ["sr", "gsps", "kos"]``), in the artifacts
    table and in every derived output UID (changing a value changes UIDs).

    ``GSPS`` and ``CSPS`` are both written by the presentation-state exporter
    (:mod:`exporters.pr`): a grayscale source gets a GSPS, a colour one a
    Colour PS; a destination asks for both as ``"gsps"``. DICOM SEG will be
    ``SEG = "seg"`` with its package ``exporters/seg``.
    """

    SR = "sr"
    GSPS = "gsps"
    CSPS = "csps"
    SC = "sc"
    KOS = "kos"
    FHIR_BUNDLE = "fhir"
    HL7_ORU = "hl7"

    @property
    def requested_as(self) -> OutputKind:
        """The kind a destination names to get objects of this kind (``CSPS`` → ``GSPS``)."""
        return OutputKind.GSPS if self is OutputKind.CSPS else self

    @property
    def is_dicom(self) -> bool:
        """Whether objects of this kind are DICOM instances (sent by C-STORE / STOW-RS)."""
        return self not in (OutputKind.FHIR_BUNDLE, OutputKind.HL7_ORU)


class UnknownOutputKindError(ExportError, ValueError):
    """A configured output name is not an output kind (the message names it and the known ones)."""


def parse_output_kind(name: object) -> OutputKind:
    """The :class:`OutputKind` a configured name stands for.

    Raises
    ------
    UnknownOutputKindError
        ``name`` is not one of the kinds' values (the message lists them).
    """
    if isinstance(name, OutputKind):
        return name
    try:
        return OutputKind(str(name).strip().lower())
    except ValueError:
        known = ", ".join(repr(k.value) for k in OutputKind)
        raise UnknownOutputKindError(
            f"unknown output kind {name!r}; known kinds: {known}"
        ) from None


@dataclass(frozen=True)
class Artifact:
    """One object an exporter built.

    Parameters
    ----------
    kind
        What it is (a presentation-state exporter gives ``GSPS`` or ``CSPS``).
    language
        BCP-47 tag of its texts (the first one of a bilingual object).
    filename
        File name under the job's output folder; unique within the job.
    media_type
        ``application/dicom``, ``application/fhir+json``, ``x-application/hl7-v2+er7``.
    content
        The DICOM dataset, or the encoded bytes of anything else.
    object_uid
        SOP Instance UID of a DICOM object; the Bundle UID of a FHIR Bundle,
        the MSH-10 Message Control ID of an HL7 message.
    """

    kind: OutputKind
    language: str
    filename: str
    media_type: str
    content: Dataset | bytes
    object_uid: str

    def __post_init__(self) -> None:
        if not isinstance(self.kind, OutputKind):
            raise TypeError(f"kind must be an OutputKind, got {self.kind!r}")
        if not self.filename or "/" in self.filename or self.filename.startswith("."):
            raise ValueError(f"filename must be a plain file name, got {self.filename!r}")
        if not isinstance(self.content, Dataset | bytes):
            raise TypeError(
                f"content must be a pydicom Dataset or bytes, got {type(self.content).__name__}"
            )

    @property
    def dataset(self) -> Dataset | None:
        """The DICOM dataset, or ``None`` for a non-DICOM artifact."""
        return self.content if isinstance(self.content, Dataset) else None

    @property
    def series_instance_uid(self) -> str | None:
        ds = self.dataset
        return None if ds is None else str(ds.SeriesInstanceUID)

    @property
    def sop_class_uid(self) -> str | None:
        ds = self.dataset
        return None if ds is None else str(ds.SOPClassUID)

    def to_bytes(self) -> bytes:
        """The artifact as written to disk (a DICOM object as a Part 10 file)."""
        if isinstance(self.content, bytes):
            return self.content
        buffer = BytesIO()
        self.content.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    @classmethod
    def from_dataset(cls, kind: OutputKind, language: str, dataset: Dataset) -> Artifact:
        """A DICOM artifact named ``<kind>-<language>-<SOP Instance UID>.dcm``."""
        uid = str(dataset.SOPInstanceUID)
        return cls(
            kind, language, f"{kind.value}-{language}-{uid}.dcm", DICOM_MEDIA_TYPE, dataset, uid
        )


@dataclass(frozen=True)
class Verifier:
    """The radiologist who signed (from their account).

    Parameters
    ----------
    name
        Full name as written (``"Jane Doe"``); exporters format it for their standard (DICOM PN
        ``Doe^Jane``, FHIR HumanName).
    organisation
        Verifying Organization (0040,A027) / the Practitioner's organisation.
    identifier
        The account name, unique on this node (Person Identification Code Sequence, FHIR
        Practitioner.identifier with ``identifier_system``).
    identifier_system
        Namespace of ``identifier`` (``urn:radground:<AE title>:account``).
    """

    name: str
    organisation: str
    identifier: str
    identifier_system: str

    def __post_init__(self) -> None:
        if not self.name.strip() or not self.identifier.strip():
            raise ValueError("a verifier needs a name and an identifier")


@dataclass(frozen=True)
class PredecessorDocument:
    """An object a signed output replaces (the UNVERIFIED SR of the same language)."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    language: str


@dataclass(frozen=True)
class SignOff:
    """What a radiologist's sign-off adds to a job's outputs (``ExportOptions.sign_off``).

    The report handed to the exporters with it is the *reviewed* one: rejected findings removed,
    edited ones changed, added ones included, in the reviewed languages only.

    Parameters
    ----------
    verifier, verified_at
        Who signed, and when (timezone-aware).
    number
        The sign-off's number (1 for the first); part of every derived UID, so a signed set has
        new UIDs and building it twice builds the same objects.
    predecessors
        The model's (unverified) SRs this sign-off replaces.
    withdrawn
        The model's findings the radiologist rejected, as the model made them (not in the
        reviewed report): FHIR writes their Observations again as ``entered-in-error``.
    edited
        Tracking UIDs of findings the radiologist changed or added (the radiologist is their
        observer in the SR).
    amends
        A preliminary report already reached this destination: FHIR ``amended``, HL7 ``C``
        (else ``final`` / ``F``).
    """

    verifier: Verifier
    verified_at: datetime
    number: int = 1
    predecessors: tuple[PredecessorDocument, ...] = ()
    withdrawn: tuple[Finding, ...] = ()
    edited: frozenset[str] = frozenset()
    amends: bool = False

    def __post_init__(self) -> None:
        if self.verified_at.tzinfo is None:
            raise ValueError("SignOff.verified_at must be timezone-aware")
        if self.number < 1:
            raise ValueError("SignOff.number starts at 1")


@dataclass(frozen=True)
class ExportOptions:
    """What every exporter is told about the job.

    Parameters
    ----------
    revision
        Study revision (part of every derived UID: a redelivered job rebuilds
        the same objects).
    languages
        BCP-47 tags of the languages to write, the primary one first.
    references
        The DICOM artifacts built before this one in the same job (SR, GSPS, ...),
        for outputs that point at them (the KOS, the FHIR ImagingStudy, the
        HL7 reference OBX).
    destination
        The destination a per-destination copy is for (a FHIR Bundle with that
        endpoint's identifier system, an HL7 message for that receiver);
        ``""`` for the local copy.
    local_node
        This node's AE title (a FHIR Patient identifier namespace of last resort).
    sign_off
        ``None``: the model's own, unverified outputs; else the radiologist's sign-off these
        outputs carry (VERIFIED SR, replacement GSPS/KOS, FHIR final/amended, HL7 F/C).
    """

    revision: int
    languages: tuple[str, ...]
    references: tuple[Artifact, ...] = ()
    destination: str = ""
    local_node: str = "RADGROUND"
    sign_off: SignOff | None = None

    def __post_init__(self) -> None:
        if not self.languages:
            raise ValueError("languages: at least one language is needed")


class Exporter(Protocol):
    """One output kind's builder (an instance per exporter, stateless).

    Attributes
    ----------
    kind
        The kind a destination names to get this exporter's objects.
    produces
        The kinds of the artifacts it returns (``{kind}``, or GSPS and CSPS).
    sop_class_uids
        The SOP classes of the DICOM objects it writes (empty if not DICOM):
        the node recognises these as its own when a PACS routes them back.
    media_type
        Media type of its artifacts.
    """

    kind: ClassVar[OutputKind]
    produces: ClassVar[frozenset[OutputKind]]
    sop_class_uids: ClassVar[frozenset[str]]
    media_type: ClassVar[str]

    def export(
        self,
        report: GroundedReport,
        sources: Sequence[Dataset],
        plan: RegionPlan,
        options: ExportOptions,
    ) -> list[Artifact]:
        """Build this kind's objects (possibly none: no regions, no key images).

        Raises
        ------
        exporters.errors.ExportError
            The objects cannot be built (the message says why, without patient data).
        """
        ...
