"""Secondary Capture images with the findings burned in (optional; PS3.3 A.8.1).

For viewers that render neither SR nor GSPS, one Secondary Capture image
(PS3.3 A.8.1) per source image (and frame) with regions: the source's pixels,
windowed to 8 bits, with the boxes and labels drawn in (see
:mod:`exporters.preview`). Off by default in the product: burned-in marks
cannot be hidden and the image is a lossy copy.

It is marked as derived AI output everywhere a person or a machine would look:
Burned In Annotation ``YES``, Image Type ``DERIVED\\SECONDARY``, a Series
Description and Derivation Description saying "AI" and "unverified", a
caption burned into the image, Source Image Sequence pointing at the exact
source image and frame, and the model as Contributing Equipment. After a
radiologist's sign-off (:class:`~exporters.protocol.SignOff`; the report is the
reviewed one) the images are new (UIDs derived with the sign-off number) and
these texts and the caption say "verified by radiologist".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.sr.codedict import codes
from pydicom.uid import SecondaryCaptureImageStorage

from engine.report import FindingKind, GroundedReport
from engine.uids import short_uid
from exporters.errors import ExportError, SourceError
from exporters.pr.content import (
    LayerStyle,
    PlacedRegion,
    finding_label,
    layer_styles,
    plan_overlays,
    truncate_utf8,
)
from exporters.pr.sop import copy_series_anatomy, series_description
from exporters.preview import Overlay, display_array, render_overlay
from exporters.protocol import OutputKind, SignOff
from exporters.regions import RegionPlan, plan_regions
from exporters.signoff import signoff_number
from exporters.uids import output_uid

__all__ = ["SOP_CLASS_UIDS", "build_secondary_captures", "render_preview", "source_display_pixels"]

logger = logging.getLogger(__name__)

#: SOP classes this exporter writes: Secondary Capture Image Storage (PS3.4 B.5).
SOP_CLASS_UIDS: frozenset[str] = frozenset({str(SecondaryCaptureImageStorage)})

#: Burned-in labels are cut at this many UTF-8 bytes (a readable line).
_LABEL_BYTES = 120
_CAPTION = "AI output \u2013 unverified"
_VERIFIED_CAPTION = "AI output \u2013 verified by radiologist"


def build_secondary_captures(
    report: GroundedReport,
    sources: Sequence[Dataset],
    *,
    language: str,
    revision: int,
    series_number: int = 9903,
    graphic_color: tuple[int, int, int] | Mapping[FindingKind, tuple[int, int, int]] | None = None,
    window: tuple[float, float] | None = None,
    manufacturer: str = "RadGround",
    software_versions: str = "0.1.0",
    plan: RegionPlan | None = None,
    sign_off: SignOff | None = None,
) -> list[hd.sc.SCImage]:
    """Secondary Capture images with ``report``'s regions burned in.

    Parameters
    ----------
    report
        The grounded report.
    sources
        The source images, with pixel data (decoded with pydicom).
    language
        BCP-47 tag of the labels' language.
    revision
        Study revision, part of the deterministic output UIDs.
    series_number
        Series Number of the key-image series (one series per language).
    graphic_color
        Colours as for :func:`exporters.pr.build_presentation_states`.
    window
        ``(center, width)`` for grayscale sources; by default the source's
        first Window Center/Width, else the 0.5-99.5 percentile range.
    manufacturer, software_versions
        General Equipment (this software).
    plan
        The job's region plan (:func:`exporters.regions.plan_regions`); made here if omitted.
    sign_off
        The radiologist's sign-off of ``report`` (the reviewed report): new images
        saying "verified by radiologist".

    Returns
    -------
    list[highdicom.sc.SCImage]
        One RGB Secondary Capture image per source image and frame with at
        least one region, in order of first appearance.

    Raises
    ------
    SourceError
        A source lacks pixel data or its pixels cannot be decoded.
    """
    if language not in report.languages:
        raise ExportError(f"language {language!r} is not among the report's {report.languages}")
    if plan is None:
        plan = plan_regions(report, sources)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    signoff = signoff_number(sign_off)
    styles = layer_styles(graphic_color, verified=sign_off is not None)
    groups: dict[tuple[str, int | None], list[PlacedRegion]] = {}
    for placed in plan.overlays.regions:
        key = (placed.image.sop_instance_uid, placed.image.frame_number)
        groups.setdefault(key, []).append(placed)

    series_uid = output_uid(
        report,
        revision=revision,
        kind=OutputKind.SC,
        language=language,
        role="series",
        signoff=signoff,
    )
    equipment = hd.ContributingEquipment(
        manufacturer=report.model.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=report.model.name,
        software_versions=report.model.version,
    )
    images = []
    for number, ((uid, frame), regions) in enumerate(groups.items(), start=1):
        source = by_uid[uid]
        picture = np.asarray(
            _picture(
                source,
                regions,
                frame=frame,
                window=window,
                language=language,
                styles=styles,
                caption=_VERIFIED_CAPTION if signoff else _CAPTION,
            )
        )
        images.append(
            _secondary_capture(
                report,
                source,
                picture,
                frame=frame,
                language=language,
                revision=revision,
                series_uid=series_uid,
                series_number=series_number,
                instance_number=number,
                manufacturer=manufacturer,
                software_versions=software_versions,
                equipment=equipment,
                signoff=signoff,
            )
        )
        logger.debug(
            "secondary capture %d: %d region(s) on image %s", number, len(regions), short_uid(uid)
        )
    return images


def render_preview(
    report: GroundedReport,
    source: Dataset,
    *,
    language: str | Sequence[str],
    frame: int | None = None,
    graphic_color: tuple[int, int, int] | Mapping[FindingKind, tuple[int, int, int]] | None = None,
    window: tuple[float, float] | None = None,
) -> Image.Image:
    """The picture a Secondary Capture image holds, as a PIL image (for a web page or an
    e-mail): ``source`` (or one frame of it) with the report's regions on it.

    ``language`` is one BCP-47 tag, or several for bilingual labels (each finding's label
    in each language, joined by `` / ``: :func:`exporters.pr.content.finding_label`).
    Regions on other images are ignored; boxes are clipped as in the
    presentation states.
    """
    plan = plan_overlays(report, [source], only_these_sources=True)
    regions = [r for r in plan.regions if r.image.frame_number == frame]
    return _picture(
        source,
        regions,
        frame=frame,
        window=window,
        language=language,
        styles=layer_styles(graphic_color),
        caption=_CAPTION,
    )


def _picture(
    source: Dataset,
    regions: Sequence[PlacedRegion],
    *,
    frame: int | None,
    window: tuple[float, float] | None,
    language: str | Sequence[str],
    styles: Mapping[FindingKind, LayerStyle],
    caption: str,
) -> Image.Image:
    pixels = source_display_pixels(source, frame=frame, window=window)
    overlays = [
        Overlay(
            box=r.box,
            label=truncate_utf8(finding_label(r.finding, language), _LABEL_BYTES),
            rgb=styles[r.finding.kind].rgb,
        )
        for r in regions
    ]
    return render_overlay(pixels, overlays, caption=caption)


def source_display_pixels(
    source: Dataset, *, frame: int | None = None, window: tuple[float, float] | None = None
) -> np.ndarray:
    """The source image (or one frame of it) as 8-bit display values.

    Grayscale: Modality LUT, then a linear window (``window``, else the
    source's first Window Center/Width, else percentiles), inverted for
    MONOCHROME1. Colour: RGB (pydicom converts YBR), palette colour through its
    LUT; 16-bit colour is scaled to 8 bits.
    """
    if "PixelData" not in source and "FloatPixelData" not in source:
        raise SourceError(f"source image {short_uid(str(source.SOPInstanceUID))} has no pixel data")
    try:
        array = source.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as exc:
        raise SourceError(
            "cannot decode the pixels of source image "
            f"{short_uid(str(source.SOPInstanceUID))}: {exc}"
        ) from exc
    frames = int(source.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        array = array[(frame or 1) - 1]
    photometric = str(source.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, source)
        return _to_uint8(array)
    if array.ndim == 3:
        return _to_uint8(array)
    values = (
        apply_modality_lut(array, source)
        if "RescaleSlope" in source or "ModalityLUTSequence" in source
        else array
    )
    if window is None and "WindowCenter" in source and "WindowWidth" in source:
        center, width = source.WindowCenter, source.WindowWidth
        center = (
            center[0] if isinstance(center, Sequence) and not isinstance(center, str) else center
        )
        width = width[0] if isinstance(width, Sequence) and not isinstance(width, str) else width
        window = (float(center), float(width)) if float(width) > 0 else None
    return display_array(values, window=window, invert=photometric == "MONOCHROME1")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    top = float(array.max()) if array.size else 0.0
    scale = 255.0 / (65535.0 if top > 255 else 255.0)
    return np.clip(np.round(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def _patient_orientation(source: Dataset) -> tuple[str, str] | None:
    """Patient Orientation (0020,0020) of the source, or derived from Image
    Orientation (Patient) (PS3.3 C.7.6.1.1.1); ``None`` when unknown."""
    value = source.get("PatientOrientation")
    if value is not None and not isinstance(value, str) and len(value) == 2 and all(value):
        return str(value[0]), str(value[1])
    cosines = source.get("ImageOrientationPatient")
    if cosines is None or len(cosines) != 6:
        return None
    letters = (("L", "R"), ("P", "A"), ("H", "F"))

    def direction(vector: Sequence[float]) -> str:
        order = np.argsort(-np.abs(np.asarray(vector, dtype=float)))
        return "".join(
            letters[axis][0 if vector[axis] > 0 else 1]
            for axis in order
            if abs(vector[axis]) > 0.25
        )

    row, column = direction(cosines[:3]), direction(cosines[3:])
    return (row, column) if row and column else None


def _secondary_capture(
    report: GroundedReport,
    source: Dataset,
    picture: np.ndarray,
    *,
    frame: int | None,
    language: str,
    revision: int,
    series_uid: str,
    series_number: int,
    instance_number: int,
    manufacturer: str,
    software_versions: str,
    equipment: hd.ContributingEquipment,
    signoff: int = 0,
) -> hd.sc.SCImage:
    uid = str(source.SOPInstanceUID)
    orientation = _patient_orientation(source)
    try:
        image = hd.sc.SCImage(
            pixel_array=picture,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            study_instance_uid=str(source.StudyInstanceUID),
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=output_uid(
                report,
                revision=revision,
                kind=OutputKind.SC,
                language=language,
                role="instance",
                part=f"{uid}/{frame or 1}",
                signoff=signoff,
            ),
            instance_number=instance_number,
            manufacturer=manufacturer,
            patient_id=source.get("PatientID"),
            patient_name=source.get("PatientName"),
            patient_birth_date=source.get("PatientBirthDate"),
            patient_sex=source.get("PatientSex") or None,
            accession_number=source.get("AccessionNumber"),
            study_id=source.get("StudyID"),
            study_date=source.get("StudyDate"),
            study_time=source.get("StudyTime"),
            referring_physician_name=source.get("ReferringPhysicianName"),
            # highdicom needs an orientation for the PATIENT coordinate system;
            # an unknown one is blanked below (Type 2C: empty means unknown).
            patient_orientation=orientation or ("L", "F"),
            contributing_equipment=[equipment],
            specific_character_set="ISO_IR 192",
            series_description=series_description(OutputKind.SC, language, verified=bool(signoff)),
            manufacturer_model_name="RadGround burned-in findings",
            software_versions=software_versions,
        )
    except (ValueError, TypeError) as exc:
        raise ExportError(f"highdicom refused the Secondary Capture image: {exc}") from exc
    if orientation is None:
        # (mypy takes the attribute's type, list[str], from highdicom's own assignment;
        # pydicom stores None as an empty value)
        image.PatientOrientation = None  # type: ignore[assignment]
    image.copy_patient_and_study_information(source)
    copy_series_anatomy(image, source)
    # What highdicom has no arguments for (General Image module, PS3.3 C.7.6.1).
    image.BurnedInAnnotation = "YES"
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.DerivationDescription = (
        (
            "AI findings verified by a radiologist, drawn by RadGround on the source image: "
            f"model {report.model.name} {report.model.version}"
        )
        if signoff
        else (
            "AI findings (unverified) drawn by RadGround on the source image: "
            f"model {report.model.name} "
            f"{report.model.version}; not reviewed by a radiologist"
        )
    )[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = uid
    if frame is not None:
        reference.ReferencedFrameNumber = frame
    image.SourceImageSequence = [reference]
    aspect = _pixel_aspect_ratio(source)
    if aspect is not None:
        image.PixelAspectRatio = list(aspect)
    return image


def _pixel_aspect_ratio(source: Dataset) -> tuple[int, int] | None:
    """Pixel Aspect Ratio (vertical, horizontal) for non-square source pixels."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = source.get(keyword)
        if (
            spacing is not None
            and len(spacing) == 2
            and float(spacing[0]) > 0
            and float(spacing[1]) > 0
        ):
            vertical, horizontal = (
                round(float(spacing[0]) * 10000),
                round(float(spacing[1]) * 10000),
            )
            return None if vertical == horizontal else (vertical, horizontal)
    if "PixelAspectRatio" in source and len(source.PixelAspectRatio) == 2:
        vertical, horizontal = (int(v) for v in source.PixelAspectRatio)
        return None if vertical == horizontal else (vertical, horizontal)
    return None
