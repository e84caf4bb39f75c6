"""Grounded findings as Softcopy Presentation States (GSPS / Colour PS).

One presentation state per source series (and per language) draws every
region of a :class:`~engine.report.GroundedReport` on the exact source image
(and frame) it belongs to:

- Grayscale Softcopy Presentation State (PS3.3 A.33.1) for monochrome sources,
  Color Softcopy Presentation State (PS3.3 A.33.2) for RGB, YBR and PALETTE
  COLOR sources;
- one graphic layer per finding kind (PS3.3 C.10.7) with a CIE L*a*b* colour
  *and* a Recommended Display Grayscale Value;
- each region a closed 5-point POLYLINE in PIXEL units (PS3.3 C.10.5), its
  label a text object beside it, both carrying the region's Tracking UID
  and ID (the same as the SR's measurement group: the finding's UID, or one
  per region for a finding with several, see
  :func:`exporters.regions.region_tracking_uid`);
- graphics only: no Softcopy VOI LUT unless a window is asked for (a viewer
  applies a presentation state's VOI and overrides the user's window);
- Displayed Area: the whole image, top-left (1, 1) to (Columns, Rows), with
  the source's pixel aspect ratio.

After a radiologist's sign-off (:class:`~exporters.protocol.SignOff`) the
report given is the reviewed one, and its presentation states replace the
model's: new UIDs derived with the sign-off number, the same referenced images,
only the reviewed findings drawn, and series, content and layer descriptions
saying "verified by radiologist" (Content Label ``AI_VERIFIED``).

Everything is built with highdicom's ``hd.pr`` classes. The few attributes
highdicom has no argument for are set on its objects afterwards, each with the
reason next to it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import highdicom as hd
import numpy as np
from PIL import ImageCms
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.tag import Tag

from engine.report import FindingKind, GroundedReport
from engine.uids import short_uid
from exporters._highdicom_cache import with_memoised_iod_lookups
from exporters.errors import ExportError, SourceError
from exporters.pr.content import (
    LO_MAX_CHARS,
    LayerStyle,
    PlacedRegion,
    finding_label,
    layer_styles,
    text_box_for,
    truncate_utf8,
)
from exporters.protocol import OutputKind, SignOff
from exporters.regions import RegionPlan, plan_regions
from exporters.signoff import signoff_number
from exporters.uids import output_uid

__all__ = [
    "PresentationState",
    "build_presentation_states",
    "copy_series_anatomy",
    "series_description",
]

logger = logging.getLogger(__name__)

PresentationState = hd.pr.GrayscaleSoftcopyPresentationState | hd.pr.ColorSoftcopyPresentationState

#: Photometric interpretations that need a Color Softcopy Presentation State.
_COLOR_PHOTOMETRIC = frozenset(
    {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"}
)

#: VOI attributes highdicom would otherwise copy from the source into the GSPS
#: (PS3.3 C.11.2 Softcopy VOI LUT Module) and so override the user's window.
_VOI_KEYWORDS = (
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "VOILUTSequence",
)

#: Patient and study attributes highdicom reads unconditionally; Type 2 in the
#: Patient and General Study modules, so an empty value ("unknown") is valid.
_TYPE2_HEADER_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)

#: Body parts examined (CID 4031 CS values) that are unpaired: for these the
#: General Series Laterality (0020,0060), Type 2C, is not required.
_UNPAIRED_BODY_PARTS = frozenset(
    {
        "CHEST",
        "ABDOMEN",
        "PELVIS",
        "HEAD",
        "NECK",
        "SKULL",
        "BRAIN",
        "HEART",
        "SPINE",
        "CSPINE",
        "TSPINE",
        "LSPINE",
        "SSPINE",
        "COCCYX",
        "WHOLEBODY",
        "THORAX",
        "CHESTABDOMEN",
        "CHESTABDPELVIS",
        "ABDOMENPELVIS",
        "HEADNECK",
        "LIVER",
        "PANCREAS",
        "SPLEEN",
        "BLADDER",
        "UTERUS",
        "PROSTATE",
        "STOMACH",
        "COLON",
        "ESOPHAGUS",
        "AORTA",
        "LARYNX",
        "TRACHEA",
        "SACRUM",
        "STERNUM",
        "MEDIASTINUM",
        "PITUITARY",
        "CAROTID",
    }
)


def series_description(kind: OutputKind, language: str, *, verified: bool = False) -> str:
    """SeriesDescription of an overlay series, e.g. ``"AI overlays (unverified) – ZH-CN"``,
    or ``"AI overlays (verified by radiologist) – ZH-CN"`` after a sign-off."""
    # "key images" is the Key Object Selection's (exporters.kos): a PACS lists both series
    what = "AI burned-in findings" if kind is OutputKind.SC else "AI overlays"
    state = "verified by radiologist" if verified else "unverified"
    return f"{what} ({state}) \u2013 {language.upper()}"


@with_memoised_iod_lookups
def build_presentation_states(
    report: GroundedReport,
    sources: Sequence[Dataset],
    *,
    language: str,
    revision: int,
    series_number: int = 9902,
    graphic_color: tuple[int, int, int] | Mapping[FindingKind, tuple[int, int, int]] | None = None,
    window: tuple[float, float] | None = None,
    manufacturer: str = "RadGround",
    software_versions: str = "0.1.0",
    plan: RegionPlan | None = None,
    sign_off: SignOff | None = None,
) -> list[PresentationState]:
    """Presentation states drawing ``report``'s regions on its source images.

    Parameters
    ----------
    report
        The grounded report.
    sources
        The source images' datasets (headers suffice: pixel data is not read).
        Every image a region is on must be among them.
    language
        BCP-47 tag of the labels' language (falls back to each finding's
        primary language where a label lacks it).
    revision
        Study revision, part of the deterministic output UIDs
        (:func:`exporters.uids.output_uid`).
    series_number
        Series Number (0020,0011) of the output series.
    graphic_color
        sRGB colour of the graphics: one triple for all, or one per finding
        kind; default :data:`~exporters.pr.content.DEFAULT_LAYER_COLORS`.
    window
        ``(center, width)`` to impose as Softcopy VOI LUT (PS3.3 C.11.8); by
        default none, so the viewer keeps the user's window.
    manufacturer, software_versions
        General Equipment of the presentation state (this software); the model
        is recorded as Contributing Equipment.
    plan
        The job's region plan (:func:`exporters.regions.plan_regions`, whose
        ``notes`` record clipped and dropped boxes); made here if omitted.
    sign_off
        The radiologist's sign-off of ``report`` (the reviewed report): the
        states replace the model's (new UIDs with the sign-off number, texts
        saying "verified").

    Returns
    -------
    list
        One :class:`highdicom.pr.GrayscaleSoftcopyPresentationState` or
        :class:`highdicom.pr.ColorSoftcopyPresentationState` per source series
        (per image size and photometric kind within a series, which the
        Displayed Area and the LUTs must match), in
        order of first appearance; empty when no region can be drawn.

    Raises
    ------
    SourceError
        A region's image is not among ``sources`` or lacks what a presentation
        state needs.
    ExportError
        Invalid arguments, or highdicom refused the object.
    """
    if language not in report.languages:
        raise ExportError(f"language {language!r} is not among the report's {report.languages}")
    if window is not None and (len(window) != 2 or not window[1] > 0):
        raise ExportError(f"window must be (center, width) with width > 0, got {window!r}")
    if plan is None:
        plan = plan_regions(report, sources)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    verified = sign_off is not None
    signoff = signoff_number(sign_off)
    styles = layer_styles(graphic_color, verified=verified)
    layers = {kind: _graphic_layer(style) for kind, style in styles.items()}

    # One presentation state per source series; within a series, one per image
    # size and photometric kind, which its Displayed Area and LUTs must match.
    groups: dict[tuple[str, int, int, str], list[PlacedRegion]] = {}
    for placed in plan.overlays.regions:
        source = by_uid[placed.image.sop_instance_uid]
        if "SeriesInstanceUID" not in source:
            raise SourceError(
                f"source image {short_uid(placed.image.sop_instance_uid)} lacks SeriesInstanceUID"
            )
        key = (str(source.SeriesInstanceUID), placed.rows, placed.columns, _pixel_kind(source))
        groups.setdefault(key, []).append(placed)

    equipment = hd.ContributingEquipment(
        manufacturer=report.model.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=report.model.name,
        software_versions=report.model.version,
    )
    states: list[PresentationState] = []
    instance_numbers: dict[str, int] = {}
    for (series_uid, rows, columns, pixel_kind), regions in groups.items():
        images = [by_uid[uid] for uid in dict.fromkeys(r.image.sop_instance_uid for r in regions)]
        color = pixel_kind == "COLOR"
        kind = OutputKind.CSPS if color else OutputKind.GSPS
        instance_numbers[series_uid] = instance_numbers.get(series_uid, 0) + 1
        references = [_reference_header(im, color=color) for im in images]
        annotations = _annotations(regions, references, layers, language)
        used_layers = [layers[k] for k in styles if any(r.finding.kind is k for r in regions)]
        common: dict[str, Any] = dict(
            referenced_images=references,
            series_instance_uid=output_uid(
                report,
                revision=revision,
                kind=kind,
                language=language,
                role="series",
                part=series_uid,
                signoff=signoff,
            ),
            series_number=series_number,
            sop_instance_uid=output_uid(
                report,
                revision=revision,
                kind=kind,
                language=language,
                role="instance",
                part=f"{series_uid}/{rows}x{columns}/{pixel_kind}",
                signoff=signoff,
            ),
            instance_number=instance_numbers[series_uid],
            manufacturer=manufacturer,
            manufacturer_model_name="RadGround overlays",
            software_versions=software_versions,
            device_serial_number=report.model.device_uid[:LO_MAX_CHARS],
            content_label="AI_VERIFIED" if verified else "AI_OVERLAYS",
            content_description=truncate_utf8(
                series_description(kind, language, verified=verified), LO_MAX_CHARS
            ),
            graphic_annotations=annotations,
            graphic_layers=used_layers,
            contributing_equipment=[equipment],
            specific_character_set="ISO_IR 192",
            series_description=series_description(kind, language, verified=verified),
        )
        state: PresentationState
        try:
            if color:
                state = hd.pr.ColorSoftcopyPresentationState(
                    **common, icc_profile=_icc_profile(images)
                )
            else:
                state = hd.pr.GrayscaleSoftcopyPresentationState(
                    **common,
                    voi_lut_transformations=_voi(window),
                    presentation_lut_transformation=_presentation_lut(images[0]),
                )
        except (ValueError, TypeError, AttributeError) as exc:
            raise ExportError(f"highdicom refused the presentation state: {exc}") from exc
        copy_series_anatomy(state, images[0])
        _set_pixel_aspect_ratio(state, images[0])
        logger.debug(
            "built %s for series %s: %d region(s) on %d image(s)",
            kind.value,
            short_uid(series_uid),
            len(regions),
            len(images),
        )
        states.append(state)
    return states


def _pixel_kind(source: Dataset) -> str:
    """``COLOR``, ``MONOCHROME1`` or ``MONOCHROME2``."""
    photometric = str(source.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric in _COLOR_PHOTOMETRIC:
        return "COLOR"
    return "MONOCHROME1" if photometric == "MONOCHROME1" else "MONOCHROME2"


def _reference_header(source: Dataset, *, color: bool) -> Dataset:
    """The header highdicom gets for a referenced image.

    A copy without pixel data and without VOI attributes (so that highdicom
    does not copy the source's window into the GSPS), with the Type 2 patient
    and study attributes highdicom reads present (empty where the source omits
    them), and with empty functional groups where a multi-frame
    image lacks them. For PALETTE COLOR sources Samples per Pixel is given as 3: the
    Color Softcopy Presentation State applies to palette colour images
    (PS3.4 N.2.1) but highdicom checks only for three samples.
    """
    header = Dataset()
    skip = {Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009)}
    skip.update(Tag(k) for k in _VOI_KEYWORDS)
    for element in source:
        if element.tag in skip or element.tag.group in (0x6000, 0x6002):  # no overlay planes
            continue
        if element.keyword in (
            "SharedFunctionalGroupsSequence",
            "PerFrameFunctionalGroupsSequence",
        ):
            header[element.tag] = copy.deepcopy(element)
            for group in header[element.tag].value:
                if "FrameVOILUTSequence" in group:
                    del group.FrameVOILUTSequence
            continue
        header[element.tag] = element
    for keyword in _TYPE2_HEADER_KEYWORDS:
        if keyword not in header:
            setattr(header, keyword, None)
    frames = int(source.get("NumberOfFrames", 1) or 1)
    if frames > 1 and "SharedFunctionalGroupsSequence" not in header:
        # highdicom reads the Modality and VOI LUTs of a multi-frame image from
        # its functional groups; a legacy multi-frame file has none.
        header.SharedFunctionalGroupsSequence = [Dataset()]
        header.PerFrameFunctionalGroupsSequence = [Dataset() for _ in range(frames)]
    if color and str(source.get("PhotometricInterpretation")) == "PALETTE COLOR":
        header.SamplesPerPixel = 3
    return header


def _graphic_layer(style: LayerStyle) -> hd.pr.GraphicLayer:
    layer = hd.pr.GraphicLayer(
        layer_name=style.name,
        order=style.order,
        description=style.description,
        display_color=hd.color.CIELabColor.from_rgb(*style.rgb),
    )
    # highdicom has no argument for it; without it grayscale viewers draw the
    # layer white (PS3.3 C.10.7.1.1: a monochrome display uses this value).
    layer.GraphicLayerRecommendedDisplayGrayscaleValue = style.grayscale
    return layer


def _annotations(
    regions: Sequence[PlacedRegion],
    references: Sequence[Dataset],
    layers: Mapping[FindingKind, hd.pr.GraphicLayer],
    language: str,
) -> list[hd.pr.GraphicAnnotation]:
    """One Graphic Annotation item per (image, frame, layer) (PS3.3 C.10.5)."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in references}
    grouped: dict[tuple[str, int | None, FindingKind], list[PlacedRegion]] = {}
    for region in regions:
        key = (region.image.sop_instance_uid, region.image.frame_number, region.finding.kind)
        grouped.setdefault(key, []).append(region)
    annotations = []
    for (uid, frame, kind), items in grouped.items():
        graphics = []
        texts = []
        for region in items:
            tracking: dict[str, Any] = {
                "tracking_id": _tracking_id(region, language),
                "tracking_uid": region.tracking_uid,
            }
            graphics.append(
                hd.pr.GraphicObject(
                    graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                    graphic_data=np.asarray(region.box.polyline(), dtype=np.float64),
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                    is_filled=False,
                    **tracking,
                )
            )
            texts.append(
                hd.pr.TextObject(
                    text_value=finding_label(region.finding, language),
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                    bounding_box=text_box_for(region),
                    text_justification=hd.pr.TextJustificationValues.LEFT,
                    **tracking,
                )
            )
        annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[by_uid[uid]],
                graphic_layer=layers[kind],
                referenced_frame_number=frame,
                graphic_objects=graphics,
                text_objects=texts,
            )
        )
    return annotations


def _tracking_id(region: PlacedRegion, language: str) -> str:
    """Tracking ID (LO): as the SR's Tracking Identifier names the region,
    ``F<finding number>[.<region number>] <label>``."""
    number = f"F{region.finding_index + 1}"
    if len(region.finding.regions) > 1:
        number += f".{region.region_index + 1}"
    label = region.finding.label.get(language) or region.finding.label.primary
    return truncate_utf8(f"{number} {' '.join(label.split())}", LO_MAX_CHARS)


def _voi(window: tuple[float, float] | None) -> list[hd.pr.SoftcopyVOILUTTransformation] | None:
    if window is None:
        return None
    center, width = window
    return [
        hd.pr.SoftcopyVOILUTTransformation(
            window_center=float(center), window_width=float(width), window_explanation="RADGROUND"
        )
    ]


def _presentation_lut(source: Dataset) -> hd.PresentationLUTTransformation:
    """IDENTITY for MONOCHROME2, INVERSE for MONOCHROME1 sources, so the image
    keeps its polarity (PS3.3 C.11.6.1)."""
    inverse = str(source.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    shape = (
        hd.PresentationLUTShapeValues.INVERSE if inverse else hd.PresentationLUTShapeValues.IDENTITY
    )
    return hd.PresentationLUTTransformation(presentation_lut_shape=shape)


def _icc_profile(images: Sequence[Dataset]) -> bytes:
    """The sources' ICC profile, or sRGB when they carry none (PS3.3 C.11.15:
    the ICC Profile Module is mandatory in a Color Softcopy PS)."""
    profiles = {bytes(im.ICCProfile) for im in images if "ICCProfile" in im}
    if len(profiles) > 1:
        raise SourceError("images of one source series carry different ICC profiles")
    if profiles:
        return profiles.pop()
    return _srgb_profile()


def _srgb_profile() -> bytes:
    """An sRGB ICC profile of device class ``spac`` (colour space conversion).

    PS3.3 C.11.15.1.1 wants an input or colour-space profile for the colour
    values of the referenced images; littleCMS writes sRGB as a display
    (``mntr``) profile, so the class is changed and the profile ID (an MD5 over
    the profile with flags, intent and ID zeroed, ICC.1:2010 §7.2.18) renewed.
    """
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[12:16] = b"spac"
    hashed = bytearray(profile)
    hashed[44:48] = bytes(4)
    hashed[64:68] = bytes(4)
    hashed[84:100] = bytes(16)
    profile[84:100] = hashlib.md5(hashed, usedforsecurity=False).digest()
    return bytes(profile)


def copy_series_anatomy(state: Dataset, source: Dataset) -> None:
    """Body Part Examined and Laterality of the General Series module.

    Laterality (0020,0060) is Type 2C: required when the body part examined is
    a paired structure (PS3.3 C.7.3.1). highdicom sets neither, and a
    validator that cannot see the body part must assume it may be paired. So
    the source's Body Part Examined is carried over, and Laterality is copied
    from the source (Laterality, else Image Laterality when R or L) or, when
    the body part is paired or unknown and the source says nothing, included
    empty (Type 2: present, value unknown).
    """
    body_part = str(source.get("BodyPartExamined", "") or "").strip().upper()
    if body_part:
        state.BodyPartExamined = body_part
    laterality = str(source.get("Laterality", "") or "").strip().upper()
    if laterality not in ("R", "L"):
        image_laterality = str(source.get("ImageLaterality", "") or "").strip().upper()
        laterality = image_laterality if image_laterality in ("R", "L") else ""
    if laterality:
        state.Laterality = laterality
    elif body_part not in _UNPAIRED_BODY_PARTS:
        state.Laterality = None


def _set_pixel_aspect_ratio(state: Dataset, source: Dataset) -> None:
    """Presentation Pixel Aspect Ratio (0070,0102) from the source's pixel
    spacing or Pixel Aspect Ratio (PS3.3 C.10.4); highdicom always writes 1:1,
    which would stretch images with non-square pixels."""
    ratio = None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = source.get(keyword)
        if (
            spacing is not None
            and len(spacing) == 2
            and float(spacing[0]) > 0
            and float(spacing[1]) > 0
        ):
            ratio = Fraction(float(spacing[0])) / Fraction(float(spacing[1]))
            break
    if ratio is None and "PixelAspectRatio" in source and len(source.PixelAspectRatio) == 2:
        vertical, horizontal = (int(v) for v in source.PixelAspectRatio)
        if vertical > 0 and horizontal > 0:
            ratio = Fraction(vertical, horizontal)
    if ratio is None:
        return
    ratio = ratio.limit_denominator(10000)
    if ratio == 1:
        return
    for item in state.DisplayedAreaSelectionSequence:
        item.PresentationPixelAspectRatio = [ratio.numerator, ratio.denominator]
