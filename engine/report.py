"""The contract between the engine and the exporters: a grounded report.

A :class:`GroundedReport` holds what a region-aware model said about one study:
findings written as sentences in one or more languages, each tied to boxes on
exact source images (see ``docs/architecture.md``, "GroundedReport": the
contract between engine and exporters).

Every value here is immutable and validated when it is constructed: a bad box,
an unknown language or an empty label raises :class:`ReportError` naming the
argument, never later at export time.

Boxes are in the **source image's pixel space**: DICOM column (x) and row (y),
origin at the top-left corner of the top-left pixel, so a box covering the
whole of a 512 x 512 image is ``Box(0, 0, 512, 512)``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np

from engine.errors import EngineError
from engine.uids import is_valid_uid

__all__ = [
    "SUPPORTED_LANGUAGES",
    "Box",
    "CodedConcept",
    "Finding",
    "FindingKind",
    "GroundedReport",
    "ImageRef",
    "ModelInfo",
    "Presence",
    "Region",
    "ReportError",
    "Task",
    "Text",
    "derive_uid",
    "finding_from_dict",
    "finding_to_dict",
]


class ReportError(EngineError, ValueError):
    """A report value was constructed from invalid arguments."""


#: Languages a report may carry, as BCP-47 tags, with the ISO 639 / ISO 3166
#: codes that DICOM TID 1204 ("Language of Content Item and Descendants") and
#: FHIR ``Attachment.language`` use for them.
SUPPORTED_LANGUAGES: Mapping[str, tuple[str, str | None]] = MappingProxyType(
    {
        "en": ("en", None),
        "en-US": ("en", "US"),
        "en-GB": ("en", "GB"),
        "zh-CN": ("zh", "CN"),
        "zh-TW": ("zh", "TW"),
        "de": ("de", None),
        "fr": ("fr", None),
        "es": ("es", None),
    }
)

def _check_uid(name: str, value: object) -> str:
    if not is_valid_uid(value):
        raise ReportError(
            f"{name} must be a valid DICOM UID (digits and dots, <= 64 chars), got {value!r}"
        )
    return value  # type: ignore[return-value]


def derive_uid(*parts: object) -> str:
    """A deterministic UID under the ``2.25`` root (PS3.5 §B.2) derived from ``parts``.

    The same parts always give the same UID, so re-running a job reproduces the
    UIDs of its outputs; any change in a part gives a different UID.
    """
    if not parts:
        raise ReportError("derive_uid needs at least one part")
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16]).int}"


class FindingKind(enum.StrEnum):
    """Whether a finding names a structure or an abnormality."""

    ANATOMY = "anatomy"
    ABNORMALITY = "abnormality"


class Presence(enum.StrEnum):
    """Whether the finding is present (DICOM CID 230 "Yes-No" style)."""

    PRESENT = "present"
    ABSENT = "absent"
    INDETERMINATE = "indeterminate"


class Task(enum.StrEnum):
    """The task the model was asked to do (MedRegA's prompt families)."""

    GROUNDED_REPORT = "grounded_report"
    DETECTION = "detection"
    TEXT_TO_REGION = "text_to_region"
    REGION_TO_TEXT = "region_to_text"
    REPORT = "report"


@dataclass(frozen=True, init=False)
class Text:
    """One sentence or phrase in several languages, keyed by BCP-47 tag.

    Parameters
    ----------
    values
        Mapping of language tag (one of :data:`SUPPORTED_LANGUAGES`) to text.
        At least one language; no value may be empty or only white space.

    Examples
    --------
    >>> Text({"en": "right lung", "zh-CN": "右肺"})["zh-CN"]
    '右肺'
    """

    _items: tuple[tuple[str, str], ...]

    def __init__(self, values: Mapping[str, str]) -> None:
        if not isinstance(values, Mapping) or not values:
            raise ReportError("Text needs at least one language, e.g. Text({'en': '...'})")
        items = []
        for tag, text in values.items():
            if tag not in SUPPORTED_LANGUAGES:
                raise ReportError(
                    f"unknown language tag {tag!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}"
                )
            if not isinstance(text, str) or not text.strip():
                raise ReportError(
                    f"Text for language {tag!r} must be a non-empty string, got {text!r}"
                )
            items.append((tag, text))
        object.__setattr__(self, "_items", tuple(items))

    @property
    def languages(self) -> tuple[str, ...]:
        """The language tags, in the order they were given (the first is primary)."""
        return tuple(tag for tag, _ in self._items)

    @property
    def primary(self) -> str:
        """The text in the first language given."""
        return self._items[0][1]

    def get(self, language: str, default: str | None = None) -> str | None:
        for tag, text in self._items:
            if tag == language:
                return text
        return default

    def __getitem__(self, language: str) -> str:
        text = self.get(language)
        if text is None:
            raise KeyError(language)
        return text

    def __contains__(self, language: object) -> bool:
        return any(tag == language for tag, _ in self._items)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def as_dict(self) -> dict[str, str]:
        return dict(self._items)

    def __repr__(self) -> str:
        return f"Text({self.as_dict()!r})"


@dataclass(frozen=True)
class ImageRef:
    """The exact source image a region is drawn on.

    Parameters
    ----------
    sop_instance_uid
        SOP Instance UID (0008,0018) of the source image.
    sop_class_uid
        SOP Class UID (0008,0016) of the source image.
    frame_number
        1-based frame number for multi-frame images, ``None`` for single-frame.
    """

    sop_instance_uid: str
    sop_class_uid: str
    frame_number: int | None = None

    def __post_init__(self) -> None:
        _check_uid("sop_instance_uid", self.sop_instance_uid)
        _check_uid("sop_class_uid", self.sop_class_uid)
        if self.frame_number is not None and (
            not isinstance(self.frame_number, int) or isinstance(self.frame_number, bool)
            or self.frame_number < 1
        ):
            raise ReportError(
                f"frame_number must be a 1-based int or None, got {self.frame_number!r}"
            )


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in the source image's pixel space.

    Coordinates are floats in pixels: x is the column, y the row, the origin is
    the top-left corner of the top-left pixel. ``x_min < x_max`` and
    ``y_min < y_max``; a box may extend past the image (exporters clip it and
    record that they did).
    """

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def __post_init__(self) -> None:
        for name in ("x_min", "y_min", "x_max", "y_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise ReportError(f"Box.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ReportError(f"Box.{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not self.x_min < self.x_max:
            raise ReportError(
                f"Box needs x_min < x_max, got x_min={self.x_min}, x_max={self.x_max}"
            )
        if not self.y_min < self.y_max:
            raise ReportError(
                f"Box needs y_min < y_max, got y_min={self.y_min}, y_max={self.y_max}"
            )

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def height(self) -> float:
        return self.y_max - self.y_min

    @property
    def area(self) -> float:
        return self.width * self.height

    def clip(self, columns: int, rows: int) -> Box | None:
        """This box clipped to an image of ``columns`` x ``rows`` pixels, or
        ``None`` when nothing of it lies inside the image."""
        x_min, y_min = max(self.x_min, 0.0), max(self.y_min, 0.0)
        x_max, y_max = min(self.x_max, float(columns)), min(self.y_max, float(rows))
        if x_min >= x_max or y_min >= y_max:
            return None
        return Box(x_min, y_min, x_max, y_max)

    def polyline(self) -> tuple[tuple[float, float], ...]:
        """The closed 5-point polyline (x, y) for this box, clockwise from the
        top-left corner, first point repeated last (DICOM SCOORD POLYLINE and
        GSPS closed polyline)."""
        return (
            (self.x_min, self.y_min),
            (self.x_max, self.y_min),
            (self.x_max, self.y_max),
            (self.x_min, self.y_max),
            (self.x_min, self.y_min),
        )

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other`` (0 when they do not overlap)."""
        ix = min(self.x_max, other.x_max) - max(self.x_min, other.x_min)
        iy = min(self.y_max, other.y_max) - max(self.y_min, other.y_min)
        if ix <= 0 or iy <= 0:
            return 0.0
        inter = ix * iy
        return inter / (self.area + other.area - inter)


@dataclass(frozen=True)
class Region:
    """A box (and optionally a mask) on one exact source image.

    Parameters
    ----------
    image
        The source image (and frame) the region is drawn on.
    box
        The region's bounding box in that image's pixel space.
    mask
        Optional boolean array of shape (rows, columns) over that image, for
        mask-producing models. Stored as a read-only copy.
    """

    image: ImageRef
    box: Box
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.image, ImageRef):
            raise ReportError(f"Region.image must be an ImageRef, got {type(self.image).__name__}")
        if not isinstance(self.box, Box):
            raise ReportError(f"Region.box must be a Box, got {type(self.box).__name__}")
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.dtype != np.bool_ or mask.ndim != 2:
                raise ReportError(
                    f"Region.mask must be a 2-D bool array, got dtype={mask.dtype}, "
                    f"ndim={mask.ndim}"
                )
            mask = mask.copy()
            mask.flags.writeable = False
            object.__setattr__(self, "mask", mask)


@dataclass(frozen=True)
class CodedConcept:
    """A coded concept (DICOM code sequence item / FHIR Coding).

    Parameters
    ----------
    value
        Code Value, e.g. ``"36118008"``.
    scheme_designator
        Coding Scheme Designator, e.g. ``"SCT"``, ``"RADLEX"``, ``"DCM"``.
    meaning
        Code Meaning, e.g. ``"Pneumothorax"``.
    scheme_version
        Coding Scheme Version, where the scheme needs one.
    """

    value: str
    scheme_designator: str
    meaning: str
    scheme_version: str | None = None

    def __post_init__(self) -> None:
        for name in ("value", "scheme_designator", "meaning"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ReportError(f"CodedConcept.{name} must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class Finding:
    """One grounded finding: a label, a sentence, and the regions it is about.

    Parameters
    ----------
    kind
        Anatomy (a structure the model located) or abnormality.
    label
        What was found, e.g. ``Text({"en": "right lung", "zh-CN": "右肺"})``.
    description
        The grounded sentence about it.
    regions
        Zero or more regions; a finding without regions is a text-only item.
    tracking_uid
        UID shared by the SR, GSPS and FHIR copies of this finding.
    presence
        Whether the finding is present.
    confidence
        Model confidence in [0, 1], only when the model provides one.
    concept
        Optional coded concept for the finding type.
    """

    kind: FindingKind
    label: Text
    description: Text
    regions: tuple[Region, ...]
    tracking_uid: str
    presence: Presence = Presence.PRESENT
    confidence: float | None = None
    concept: CodedConcept | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", FindingKind(self.kind))
        except ValueError:
            raise ReportError(
                f"Finding.kind must be one of {[k.value for k in FindingKind]}, got {self.kind!r}"
            ) from None
        try:
            object.__setattr__(self, "presence", Presence(self.presence))
        except ValueError:
            raise ReportError(
                f"Finding.presence must be one of {[p.value for p in Presence]}, got "
                f"{self.presence!r}"
            ) from None
        if not isinstance(self.label, Text):
            raise ReportError(f"Finding.label must be a Text, got {type(self.label).__name__}")
        if not isinstance(self.description, Text):
            raise ReportError(
                f"Finding.description must be a Text, got {type(self.description).__name__}"
            )
        regions = tuple(self.regions)
        if not all(isinstance(r, Region) for r in regions):
            raise ReportError("Finding.regions must contain only Region values")
        object.__setattr__(self, "regions", regions)
        _check_uid("Finding.tracking_uid", self.tracking_uid)
        if self.confidence is not None:
            c = self.confidence
            if (
                isinstance(c, bool)
                or not isinstance(c, (int, float, np.floating))
                or not 0.0 <= c <= 1.0
            ):
                raise ReportError(f"Finding.confidence must be in [0, 1] or None, got {c!r}")
            object.__setattr__(self, "confidence", float(c))
        if self.concept is not None and not isinstance(self.concept, CodedConcept):
            raise ReportError(
                f"Finding.concept must be a CodedConcept, got {type(self.concept).__name__}"
            )


@dataclass(frozen=True)
class ModelInfo:
    """The model that produced a report.

    ``device_uid`` identifies this model *version* as a device (DICOM
    Contributing Equipment Device UID, FHIR Device): a new version gets a new
    UID. :meth:`for_version` derives one deterministically.
    """

    name: str
    version: str
    manufacturer: str
    device_uid: str
    #: What the model does and does not report, in short English statements
    #: (e.g. ``"not reported by this model: Effusion, Mass"``); the SR carries
    #: them as TID 4019 Algorithm Parameters.
    parameters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("name", "version", "manufacturer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ReportError(f"ModelInfo.{name} must be a non-empty string, got {value!r}")
        _check_uid("ModelInfo.device_uid", self.device_uid)
        if isinstance(self.parameters, str) or not all(
            isinstance(p, str) and p.strip() for p in self.parameters
        ):
            raise ReportError(
                f"ModelInfo.parameters must be non-empty strings, got {self.parameters!r}"
            )
        object.__setattr__(self, "parameters", tuple(self.parameters))

    @classmethod
    def for_version(
        cls, *, name: str, version: str, manufacturer: str, parameters: Sequence[str] = ()
    ) -> ModelInfo:
        """A ModelInfo whose device UID is derived from name, version and manufacturer."""
        return cls(
            name=name,
            version=version,
            manufacturer=manufacturer,
            device_uid=derive_uid("radground-model-device", manufacturer, name, version),
            parameters=tuple(parameters),
        )


@dataclass(frozen=True)
class GroundedReport:
    """What a region-aware model said about one study.

    Parameters
    ----------
    study_instance_uid
        Study Instance UID (0020,000D) of the study the report is about.
    findings
        The grounded findings, in the model's order.
    impression
        One-paragraph conclusion.
    model
        The model (and version) that produced it.
    task
        The task it was asked to do.
    raw_output
        The model's text output, verbatim, for audit.
    created_at
        When the report was produced (timezone-aware).
    problems
        What the grounding parser could not read or had to drop (malformed
        boxes, zero-area regions, ...), for the operator and the audit trail.
    """

    study_instance_uid: str
    findings: tuple[Finding, ...]
    impression: Text
    model: ModelInfo
    task: Task
    raw_output: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    problems: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_uid("GroundedReport.study_instance_uid", self.study_instance_uid)
        findings = tuple(self.findings)
        if not all(isinstance(f, Finding) for f in findings):
            raise ReportError("GroundedReport.findings must contain only Finding values")
        uids = [f.tracking_uid for f in findings]
        if len(set(uids)) != len(uids):
            raise ReportError("GroundedReport.findings must have distinct tracking_uid values")
        object.__setattr__(self, "findings", findings)
        if not isinstance(self.impression, Text):
            raise ReportError(
                f"GroundedReport.impression must be a Text, got {type(self.impression).__name__}"
            )
        if not isinstance(self.model, ModelInfo):
            raise ReportError(
                f"GroundedReport.model must be a ModelInfo, got {type(self.model).__name__}"
            )
        try:
            object.__setattr__(self, "task", Task(self.task))
        except ValueError:
            raise ReportError(
                f"GroundedReport.task must be one of {[t.value for t in Task]}, got {self.task!r}"
            ) from None
        if not isinstance(self.raw_output, str):
            raise ReportError("GroundedReport.raw_output must be a string")
        if not isinstance(self.created_at, datetime) or self.created_at.tzinfo is None:
            raise ReportError("GroundedReport.created_at must be a timezone-aware datetime")
        object.__setattr__(self, "problems", tuple(str(p) for p in self.problems))

    @property
    def languages(self) -> tuple[str, ...]:
        """Every language the report's texts carry, primary first."""
        seen: dict[str, None] = dict.fromkeys(self.impression.languages)
        for finding in self.findings:
            seen.update(dict.fromkeys(finding.label.languages))
            seen.update(dict.fromkeys(finding.description.languages))
        return tuple(seen)

    @property
    def images(self) -> tuple[ImageRef, ...]:
        """The distinct source images the regions are drawn on, in first-use order."""
        return tuple(dict.fromkeys(r.image for f in self.findings for r in f.regions))

    # -- serialisation (for queues and the database) -----------------------

    def to_json(self) -> str:
        """Serialise to JSON (masks as packed bits); :meth:`from_json` reverses it."""
        return json.dumps(_report_to_dict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> GroundedReport:
        """Parse what :meth:`to_json` wrote; validates like the constructor."""
        try:
            return _report_from_dict(json.loads(data))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ReportError(f"not a serialised GroundedReport: {exc!r}") from exc


def _mask_to_dict(mask: np.ndarray) -> dict[str, Any]:
    return {
        "shape": list(mask.shape),
        "bits": base64.b64encode(np.packbits(mask).tobytes()).decode("ascii"),
    }


def _mask_from_dict(data: dict[str, Any]) -> np.ndarray:
    rows, columns = data["shape"]
    bits = np.frombuffer(base64.b64decode(data["bits"]), dtype=np.uint8)
    return np.unpackbits(bits, count=rows * columns).astype(bool).reshape(rows, columns)


def _region_to_dict(r: Region) -> dict[str, Any]:
    return {
        "image": {
            "sop_instance_uid": r.image.sop_instance_uid,
            "sop_class_uid": r.image.sop_class_uid,
            "frame_number": r.image.frame_number,
        },
        "box": [r.box.x_min, r.box.y_min, r.box.x_max, r.box.y_max],
        "mask": None if r.mask is None else _mask_to_dict(r.mask),
    }


def finding_to_dict(f: Finding) -> dict[str, Any]:
    """A finding as JSON-ready values (the review's records of each decision keep these);
    :func:`finding_from_dict` reverses it."""
    return {
        "kind": f.kind.value,
        "label": f.label.as_dict(),
        "description": f.description.as_dict(),
        "regions": [_region_to_dict(r) for r in f.regions],
        "tracking_uid": f.tracking_uid,
        "presence": f.presence.value,
        "confidence": f.confidence,
        "concept": None if f.concept is None else {
            "value": f.concept.value,
            "scheme_designator": f.concept.scheme_designator,
            "meaning": f.concept.meaning,
            "scheme_version": f.concept.scheme_version,
        },
    }


def _report_to_dict(report: GroundedReport) -> dict[str, Any]:
    return {
        "study_instance_uid": report.study_instance_uid,
        "findings": [finding_to_dict(f) for f in report.findings],
        "impression": report.impression.as_dict(),
        "model": {
            "name": report.model.name,
            "version": report.model.version,
            "manufacturer": report.model.manufacturer,
            "device_uid": report.model.device_uid,
            "parameters": list(report.model.parameters),
        },
        "task": report.task.value,
        "raw_output": report.raw_output,
        "created_at": report.created_at.isoformat(),
        "problems": list(report.problems),
    }


def _region_from_dict(d: dict[str, Any]) -> Region:
    return Region(
        image=ImageRef(**d["image"]),
        box=Box(*d["box"]),
        mask=None if d.get("mask") is None else _mask_from_dict(d["mask"]),
    )


def finding_from_dict(d: dict[str, Any]) -> Finding:
    """The finding :func:`finding_to_dict` wrote; validates like the constructor.

    Raises
    ------
    ReportError
        ``d`` is not a serialised finding, or its values are invalid.
    """
    try:
        concept = d.get("concept")
        return Finding(
            kind=FindingKind(d["kind"]),
            label=Text(d["label"]),
            description=Text(d["description"]),
            regions=tuple(_region_from_dict(r) for r in d["regions"]),
            tracking_uid=d["tracking_uid"],
            presence=Presence(d["presence"]),
            confidence=d.get("confidence"),
            concept=None if concept is None else CodedConcept(**concept),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, ReportError):
            raise
        raise ReportError(f"not a serialised Finding: {exc!r}") from exc


def _report_from_dict(data: dict[str, Any]) -> GroundedReport:
    return GroundedReport(
        study_instance_uid=data["study_instance_uid"],
        findings=tuple(finding_from_dict(f) for f in data["findings"]),
        impression=Text(data["impression"]),
        model=ModelInfo(
            **{**data["model"], "parameters": tuple(data["model"].get("parameters", ()))}
        ),
        task=Task(data["task"]),
        raw_output=data["raw_output"],
        created_at=datetime.fromisoformat(data["created_at"]),
        problems=tuple(data.get("problems", ())),
    )
