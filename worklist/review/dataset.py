"""Signed reviews as a dataset: what the model found, what the radiologist kept, and why.

``radground review export`` writes the findings of the reviews signed in a period to a folder
that :mod:`engine.default_model.train` and :mod:`engine.default_model.evaluate` read as they
read the NIH box subset (``--data FOLDER``)::

    FOLDER/
      boxes.csv        one row per box of an accepted finding of a CLASSES class:
                       image, finding, x_min, y_min, x_max, y_max, patient_id, all_labels,
                       tracking_uid
      decisions.jsonl  one JSON object per reviewed finding (every decision, every class)
      manifest.json    format, period, counts, pseudonymisation and pixel notes
      README.md        the same, for people
      images/          with --with-pixels: <hash>.png, 8-bit grayscale at the source size

Boxes are the **final** boxes (as the radiologist left them) in pixels of the source frame,
which are the PNG's pixels (x = column, y = row, origin at the top-left corner), clipped to the
image. ``finding`` is spelled as :data:`engine.default_model.config.CLASSES` spells it; a
finding whose class is none of them (read through the vocabulary, e.g. "pleural effusion" →
"Effusion") is only in ``decisions.jsonl``. ``patient_id`` is a pseudonymous integer, the same
for every image of one patient **within one export** (training splits by it). ``all_labels``
lists the image's accepted classes. Images with only rejected findings have no box, so they are
not in ``boxes.csv`` (the format has no negative images); ``decisions.jsonl`` keeps them.

Image references: ``decisions.jsonl`` keeps each image's real Study, Series and SOP Instance
UIDs and frame number, so the image can be found in the PACS again; ``boxes.csv`` and the PNG
names carry only a hash of them (:func:`~worklist.review.dataset_images.image_file_name`). The
dataset is therefore pseudonymous, not anonymous: remove ``decisions.jsonl`` (or its UIDs)
before it leaves the site. Reviewers are ``reviewer-N`` (numbered within one export); free
text (reject notes) is left out, edited sentences are kept.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.default_model.config import CLASSES
from worklist.jobs_models import Job
from worklist.models import Instance, Series, Study
from worklist.review.dataset_images import (
    ImageUnavailableError,
    image_file_name,
    image_size,
    write_image_png,
)
from worklist.review.dataset_readme import readme_text
from worklist.review.errors import ExportDirectoryNotEmptyError, NoSignedReviewsError
from worklist.review.figures import check_period
from worklist.review_classes import dataset_class
from worklist.review_models import FindingDecision, Review, ReviewFinding, ReviewState

__all__ = [
    "BOXES_CSV_COLUMNS",
    "DATASET_FORMAT",
    "FORMAT_VERSION",
    "ExportProgress",
    "ExportSummary",
    "export_reviews",
]

logger = logging.getLogger(__name__)

DATASET_FORMAT = "radground-review-dataset"
FORMAT_VERSION = 1
#: ``boxes.csv``'s header: the NIH box file's columns that :func:`engine.default_model.data.
#: load_dataset` reads, then the finding's Tracking UID (its line in ``decisions.jsonl``).
BOXES_CSV_COLUMNS = (
    "image", "finding", "x_min", "y_min", "x_max", "y_max", "patient_id", "all_labels",
    "tracking_uid",
)
#: Reviews whose findings are read in one query.
_CHUNK = 200


class ExportProgress(Protocol):
    """Told how far an export is (the CLI's progress bar)."""

    def started(self, reviews: int) -> None:
        """The export found ``reviews`` signed reviews to write."""

    def review_written(self) -> None:
        """One more review's findings (and images) are written."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote.

    Attributes
    ----------
    reviews, findings, accepted, rejected
        Signed reviews, their findings (``decisions.jsonl`` lines), and those accepted/rejected.
    boxes, images, patients
        Rows of ``boxes.csv``, the images and pseudonymous patients they name.
    outside_classes
        Accepted findings whose class is not a training class (only in ``decisions.jsonl``).
    images_written
        PNGs under ``images/`` (0 without pixels).
    images_left_out
        ``(file name, reason)`` of the images with boxes whose file could not be read: with
        pixels, their boxes are not in ``boxes.csv``; without, they are listed unclipped.
    study_instance_uids
        The exported studies (for the audit trail; never logged).
    """

    reviews: int
    findings: int
    accepted: int
    rejected: int
    boxes: int
    images: int
    patients: int
    outside_classes: int
    images_written: int
    images_left_out: tuple[tuple[str, str], ...]
    study_instance_uids: tuple[str, ...]


@dataclass
class _Image:
    """One frame of one instance, as the dataset names it."""

    name: str
    sop_instance_uid: str
    frame_number: int | None
    patient_id: int
    series_instance_uid: str | None = None
    size: tuple[int, int] | None = None
    written: bool = False
    left_out: str | None = None
    boxes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Pseudonyms:
    """Numbers handed out in order of first appearance (stable within one export)."""

    patients: dict[int, int] = field(default_factory=dict)
    reviewers: dict[str, str] = field(default_factory=dict)

    def patient(self, patient_pk: int) -> int:
        return self.patients.setdefault(patient_pk, len(self.patients) + 1)

    def reviewer(self, account: str | None) -> str | None:
        if account is None:
            return None
        return self.reviewers.setdefault(account, f"reviewer-{len(self.reviewers) + 1}")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _check_folder(out_dir: Path) -> None:
    """Refuse a folder that holds anything (or a path that is a file)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportDirectoryNotEmptyError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise ExportDirectoryNotEmptyError(
            f"{out_dir} is not empty; export into a new or empty folder"
        )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Writer:
    """Collects an export's rows and images; one per export."""

    def __init__(
        self, out_dir: Path, decisions: TextIO, *, storage_root: Path, with_pixels: bool
    ) -> None:
        self.out_dir = out_dir
        self.decisions = decisions
        self.storage_root = storage_root
        self.with_pixels = with_pixels
        self.pseudonyms = _Pseudonyms()
        self.images: dict[tuple[str, int | None], _Image] = {}
        self.instances: dict[str, tuple[str, str]] = {}  # SOP UID -> (path, series UID)
        #: This review's decision lines, and the boxes each put in boxes.csv.
        self.pending: list[tuple[dict[str, Any], list[tuple[_Image, list[float]]]]] = []
        self.counts = {"findings": 0, "accepted": 0, "rejected": 0}
        self.outside_classes = 0
        #: Images that got boxes and whose file was not read yet.
        self.unread: dict[tuple[str, int | None], _Image] = {}
        if with_pixels:
            (out_dir / "images").mkdir()

    def load_instances(self, session: Session, sop_instance_uids: set[str]) -> None:
        wanted = sorted(sop_instance_uids - set(self.instances))
        for chunk in _chunks(wanted, 500):
            rows = session.execute(
                select(Instance.sop_instance_uid, Instance.path, Series.series_instance_uid)
                .join(Series, Instance.series_pk == Series.id)
                .where(Instance.sop_instance_uid.in_(chunk))
            ).all()
            self.instances.update({uid: (path, series) for uid, path, series in rows})

    def image(self, sop_instance_uid: str, frame_number: int | None, patient: int) -> _Image:
        key = (sop_instance_uid, frame_number)
        found = self.images.get(key)
        if found is None:
            found = _Image(image_file_name(sop_instance_uid, frame_number), sop_instance_uid,
                           frame_number, patient)
            stored = self.instances.get(sop_instance_uid)
            found.series_instance_uid = None if stored is None else stored[1]
            self.images[key] = found
        return found

    def read_images(self) -> None:
        """Read (size) or copy (pixels) the images that got boxes and were not read yet; the
        files of images without boxes are never opened."""
        unread, self.unread = self.unread, {}
        for image in unread.values():
            stored = self.instances.get(image.sop_instance_uid)
            if stored is None:
                image.left_out = "not in the index (deleted, or never received)"
                continue
            path = self.storage_root / stored[0]
            try:
                if self.with_pixels:
                    out = self.out_dir / "images" / image.name
                    image.size = write_image_png(path, image.frame_number, out)
                    image.written = True
                else:
                    image.size = image_size(path)
            except ImageUnavailableError as exc:
                image.left_out = str(exc)

    def regions(
        self, finding: dict[str, Any] | None, patient: int
    ) -> list[tuple[_Image, list[float]]]:
        if finding is None:
            return []
        return [
            (
                self.image(r["image"]["sop_instance_uid"], r["image"].get("frame_number"), patient),
                [float(v) for v in r["box"]],
            )
            for r in finding.get("regions", ())
        ]

    def add_finding(
        self, row: ReviewFinding, *, review_number: int, job_id: int, study_uid: str,
        signed_at: datetime | None, signed_by: str | None, patient: int,
    ) -> None:
        model = json.loads(row.model_finding) if row.model_finding else None
        final = json.loads(row.final_finding)
        final_label = (final.get("label") or {}).get("en")
        training_class = dataset_class(row.final_class) or dataset_class(final_label)
        accepted = row.decision is FindingDecision.ACCEPTED
        if accepted and training_class is None:
            self.outside_classes += 1
        final_regions = self.regions(final, patient)
        boxed = final_regions if accepted and training_class is not None else []
        if boxed:
            for image, box in boxed:
                if not image.boxes:
                    self.unread[(image.sop_instance_uid, image.frame_number)] = image
                image.boxes.append({
                    "finding": training_class, "box": box, "tracking_uid": row.tracking_uid,
                })
        self.pending.append(({
            "review": review_number,
            "job_id": job_id,
            "study_instance_uid": study_uid,
            "patient_id": patient,
            "tracking_uid": row.tracking_uid,
            "origin": row.origin.value,
            "decision": row.decision.value,
            "reject_reason": None if row.reject_reason is None else row.reject_reason.value,
            "model": None if model is None else _side(
                model, row.model_class, self.regions(model, patient)
            ) | {"confidence": row.model_confidence},
            "final": _side(final, row.final_class, final_regions) | {
                "training_class": training_class
            },
            "edited_languages": [tag for tag in row.edited_languages.split(",") if tag],
            "box_moved": row.box_moved,
            "box_iou": row.box_iou,
            "in_boxes_csv": False,  # set once the images are read (write_decisions)
            "decided_by": self.pseudonyms.reviewer(row.decided_by),
            "decided_at": _iso(row.decided_at),
            "signed_by": self.pseudonyms.reviewer(signed_by),
            "signed_at": _iso(signed_at),
        }, boxed))

    def write_decisions(self) -> None:
        """Read this review's images, then write its decision lines (whether each finding's
        box is in ``boxes.csv`` is known once its images are read)."""
        self.read_images()
        for line, boxed in self.pending:
            line["in_boxes_csv"] = any(
                _kept(image, self.with_pixels) and _clip(box, image.size) is not None
                for image, box in boxed
            )
            self.decisions.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
            self.counts["findings"] += 1
            if line["decision"] in ("accepted", "rejected"):
                self.counts[line["decision"]] += 1
        self.pending.clear()


def _clip(box: list[float], size: tuple[int, int] | None) -> list[float] | None:
    """The box within the image (unchanged when its size is unknown); ``None`` if nothing of
    it is inside or it is degenerate."""
    x_min, y_min, x_max, y_max = box
    if size is not None:
        columns, rows = size
        x_min, y_min = max(x_min, 0.0), max(y_min, 0.0)
        x_max, y_max = min(x_max, float(columns)), min(y_max, float(rows))
    if not (x_min < x_max and y_min < y_max):
        return None
    return [round(v, 2) for v in (x_min, y_min, x_max, y_max)]


def _kept(image: _Image, with_pixels: bool) -> bool:
    """Whether an image's boxes go to ``boxes.csv``: with pixels, only when its PNG exists."""
    return image.written or not with_pixels


def _side(
    finding: dict[str, Any], finding_class: str | None, regions: list[tuple[_Image, list[float]]]
) -> dict[str, Any]:
    return {
        "class": finding_class,
        "label": finding.get("label"),
        "description": finding.get("description"),
        "concept": finding.get("concept"),
        "regions": [
            {
                "sop_instance_uid": image.sop_instance_uid,
                "series_instance_uid": image.series_instance_uid,
                "frame_number": image.frame_number,
                "image": image.name,
                "box": box,
            }
            for image, box in regions
        ],
    }


def _signed_reviews(session: Session, since: datetime, until: datetime) -> list[Any]:
    return list(session.execute(
        select(
            Review.id, Review.job_id, Review.signed_at, Review.signed_by,
            Study.study_instance_uid, Study.patient_pk,
        )
        .join(Job, Review.job_id == Job.id)
        .join(Study, Job.study_pk == Study.id)
        .where(
            Review.state == ReviewState.SIGNED, Review.signed_at >= since, Review.signed_at < until
        )
        .order_by(Review.signed_at, Review.id)
    ).all())


def export_reviews(
    session: Session,
    out_dir: Path,
    *,
    since: datetime,
    until: datetime,
    storage_root: Path,
    with_pixels: bool = False,
    progress: ExportProgress | None = None,
) -> ExportSummary:
    """Write the findings of the reviews signed in ``[since, until)`` to ``out_dir``.

    Parameters
    ----------
    session
        Reads the reviews and the index; nothing is changed.
    out_dir
        A new or empty folder (created with its parents).
    since, until
        Timezone-aware ends of the period (``since`` included, ``until`` not), compared with
        the reviews' ``signed_at``.
    storage_root
        Where the index's ``Instance.path`` are (``storage.root``): read for the images' sizes
        and, with ``with_pixels``, their pixels.
    with_pixels
        Write de-identified PNG copies under ``images/``.

    Raises
    ------
    InvalidPeriodError, ExportDirectoryNotEmptyError, NoSignedReviewsError
        Before anything is written.
    """
    check_period(since, until)
    _check_folder(out_dir)
    reviews = _signed_reviews(session, since, until)
    if not reviews:
        raise NoSignedReviewsError(
            f"no review was signed between {since.isoformat()} and {until.isoformat()}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        progress.started(len(reviews))
    with (out_dir / "decisions.jsonl").open("w", encoding="utf-8") as decisions:
        writer = _Writer(out_dir, decisions, storage_root=storage_root, with_pixels=with_pixels)
        _write_reviews(session, writer, reviews, progress)
    return _finish(writer, reviews, since=since, until=until)


def _write_reviews(
    session: Session, writer: _Writer, reviews: Sequence[Any], progress: ExportProgress | None
) -> None:
    number = 0
    for chunk in _chunks(reviews, _CHUNK):
        rows = session.scalars(
            select(ReviewFinding)
            .where(ReviewFinding.review_id.in_([r.id for r in chunk]))
            .order_by(ReviewFinding.review_id, ReviewFinding.position)
        ).all()
        by_review: dict[int, list[ReviewFinding]] = {}
        for row in rows:
            by_review.setdefault(row.review_id, []).append(row)
        writer.load_instances(session, {
            region["image"]["sop_instance_uid"]
            for row in rows
            for text in (row.model_finding, row.final_finding) if text
            for region in json.loads(text).get("regions", ())
        })
        for review in chunk:
            number += 1
            patient = writer.pseudonyms.patient(review.patient_pk)
            for row in by_review.get(review.id, []):
                writer.add_finding(
                    row, review_number=number, job_id=review.job_id,
                    study_uid=review.study_instance_uid, signed_at=review.signed_at,
                    signed_by=review.signed_by, patient=patient,
                )
            writer.write_decisions()
            if progress is not None:
                progress.review_written()


def _finish(
    writer: _Writer, reviews: Sequence[Any], *, since: datetime, until: datetime
) -> ExportSummary:
    out_dir = writer.out_dir
    listed: dict[str, list[tuple[dict[str, Any], list[float]]]] = {}
    patients: dict[str, int] = {}
    for image in writer.images.values():
        if not _kept(image, writer.with_pixels):
            continue
        for box in image.boxes:
            clipped = _clip(box["box"], image.size)
            if clipped is not None:
                listed.setdefault(image.name, []).append((box, clipped))
                patients[image.name] = image.patient_id
    by_class = {c: 0 for c in CLASSES}
    with (out_dir / "boxes.csv").open("w", newline="", encoding="utf-8") as handle:
        rows = csv.writer(handle)
        rows.writerow(BOXES_CSV_COLUMNS)
        for name in sorted(listed):
            named = {box["finding"] for box, _ in listed[name]}
            labels = "|".join(c for c in CLASSES if c in named)
            for box, clipped in listed[name]:
                rows.writerow([
                    name, box["finding"], *clipped, patients[name], labels, box["tracking_uid"]
                ])
                by_class[box["finding"]] += 1
    summary = ExportSummary(
        reviews=len(reviews),
        findings=writer.counts["findings"],
        accepted=writer.counts["accepted"],
        rejected=writer.counts["rejected"],
        boxes=sum(by_class.values()),
        images=len(listed),
        patients=len(set(patients.values())),
        outside_classes=writer.outside_classes,
        images_written=sum(image.written for image in writer.images.values()),
        images_left_out=tuple(sorted(
            (image.name, image.left_out) for image in writer.images.values()
            if image.left_out is not None
        )),
        study_instance_uids=tuple(dict.fromkeys(r.study_instance_uid for r in reviews)),
    )
    manifest = _manifest(summary, by_class, with_pixels=writer.with_pixels, since=since,
                         until=until)
    (out_dir / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "README.md").write_text(readme_text(manifest), encoding="utf-8")
    logger.info(
        "review dataset written: %d reviews, %d findings, %d boxes on %d images (%d PNGs)",
        summary.reviews, summary.findings, summary.boxes, summary.images, summary.images_written,
    )
    return summary


def _manifest(
    summary: ExportSummary, by_class: dict[str, int], *, with_pixels: bool, since: datetime,
    until: datetime,
) -> dict[str, Any]:
    return {
        "format": DATASET_FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": _iso(datetime.now(UTC)),
        "period": {"since": _iso(since), "until": _iso(until), "by": "signed_at",
                   "until_excluded": True},
        "classes": list(CLASSES),
        "counts": {
            "reviews": summary.reviews,
            "findings": summary.findings,
            "accepted": summary.accepted,
            "rejected": summary.rejected,
            "boxes": summary.boxes,
            "boxes_by_class": by_class,
            "images": summary.images,
            "patients": summary.patients,
            "accepted_outside_classes": summary.outside_classes,
            "images_written": summary.images_written,
        },
        "pixels": {
            "included": with_pixels,
            "rendering": "8-bit grayscale PNG at the source frame's Columns x Rows; Modality "
            "LUT, the image's first VOI window or VOI LUT (else a 0.5-99.5 percentile window), "
            "MONOCHROME1 inverted, colour to luma (engine.pixels); overlays not burned in",
            "png_metadata": "none (no text, time or physical size chunks)",
            "burned_in_text_checked": False,
            "burned_in_text_note": "text burned into the pixels (names, dates, IDs) is NOT "
            "detected: look at the images before they leave the site. Images whose Burned In "
            "Annotation (0028,0301) is YES are never copied.",
            # with pixels: not copied, so their boxes are not in boxes.csv; without: not read,
            # so their boxes are listed unclipped
            "images_left_out" if with_pixels else "images_not_read": [
                {"image": name, "reason": reason} for name, reason in summary.images_left_out
            ],
        },
        "pseudonymisation": {
            "patient_id": "an integer per patient, numbered within this export",
            "reviewers": "reviewer-N, numbered within this export",
            "image_names": "BLAKE2b-128 of the SOP Instance UID (-f<N> for frame N)",
            "uids": "decisions.jsonl keeps the real Study, Series and SOP Instance UIDs so the "
            "images can be found in the PACS again: the dataset is pseudonymous, not anonymous",
            "free_text": "reject notes are left out; edited finding sentences are kept",
        },
        "files": {
            "boxes.csv": list(BOXES_CSV_COLUMNS),
            "decisions.jsonl": "one JSON object per reviewed finding",
            "images/": "present with --with-pixels",
        },
    }
