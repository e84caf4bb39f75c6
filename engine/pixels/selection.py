"""Which images and frames of a study go to the model.

An :class:`ImageSelection` filters a study's instances (modality, body part, view,
SOP class, series description) and, for stacks of slices, picks slices the way
MedRegA does: the central slice ("the most representative view"), or N evenly
spaced ones.

Slices are ordered by their position along the slice normal, never by Instance
Number: the normal is the cross product of the row and column direction cosines of
Image Orientation (Patient) (0020,0037) and each slice's position is the dot product
of Image Position (Patient) (0020,0032) with it (PS3.3 C.7.6.2.1.1). Enhanced
multi-frame images use the per-frame Plane Position / shared or per-frame Plane
Orientation functional groups (PS3.3 C.7.6.16.2.3/.4) and fall back to frame order.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pydicom

from engine.pixels.decode import frame_count, is_multi_frame, non_image_reason
from engine.pixels.errors import PixelError
from engine.uids import short_uid

__all__ = [
    "FRONTAL_CHEST_RADIOGRAPHS",
    "VIEW_CODES",
    "ImageSelection",
    "VolumeStrategy",
    "image_views",
    "select_images",
]

logger = logging.getLogger(__name__)

#: SNOMED CT view codes of the DX View context group (CID 4010) → View Position (0018,5101) terms.
VIEW_CODES: dict[str, str] = {
    "272479007": "PA",  # postero-anterior
    "399348003": "AP",  # antero-posterior
    "399173006": "LL",  # left lateral
    "399198007": "RL",  # right lateral
    "399067008": "LATERAL",  # lateral
}

#: Modalities whose series are treated as stacks of slices by default.
DEFAULT_VOLUME_MODALITIES = frozenset({"CT", "MR", "PT"})


class VolumeStrategy(enum.StrEnum):
    """How slices (or frames) of one stack are picked."""

    #: Every slice / frame.
    ALL = "all"
    #: The central slice along the normal (MedRegA's "most representative view").
    CENTRAL = "central"
    #: ``slice_count`` slices at the centres of equal parts of the stack.
    EVENLY_SPACED = "evenly_spaced"


def _upper_set(name: str, value: Iterable[str] | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        raise ValueError(
            f"{name} must be a collection of strings, not one string ({value!r}); wrap it: "
            f"{{{value!r}}}"
        )
    try:
        items = frozenset(str(v).strip().upper() for v in value)
    except TypeError:
        raise ValueError(f"{name} must be a collection of strings, got {value!r}") from None
    if any(not v for v in items):
        raise ValueError(f"{name} must not contain empty strings")
    return items


@dataclass(frozen=True)
class ImageSelection:
    """Which images of a study go to the model.

    Every filter left empty accepts everything. Strings are compared
    case-insensitively.

    Parameters
    ----------
    modalities
        Modality (0008,0060) values, e.g. ``{"CR", "DX"}``.
    body_parts
        Body Part Examined (0018,0015) values, e.g. ``{"CHEST"}``.
    view_positions
        Views to keep: View Position (0018,5101) terms (``"PA"``, ``"AP"``, ``"LL"``, ...)
        or SNOMED CT codes of View Code Sequence (0054,0220), which
        :data:`VIEW_CODES` also maps to those terms. An image with no view
        information is dropped when this filter is set.
    sop_class_uids
        SOP Class UIDs to keep.
    series_description
        Regular expression searched (case-insensitive) in Series Description (0008,103E).
    volume_strategy
        How to pick slices from stacks (:class:`VolumeStrategy`).
    slice_count
        Number of slices for ``EVENLY_SPACED`` (must be 1 for the other strategies).
    volume_modalities
        Modalities whose single-frame series are stacked and ordered by position.
        Multi-frame images are always treated as stacks of frames.
    exclude_localizers
        Drop images whose Image Type (0008,0008) value 3 is ``LOCALIZER``.
    """

    modalities: frozenset[str] = frozenset()
    body_parts: frozenset[str] = frozenset()
    view_positions: frozenset[str] = frozenset()
    sop_class_uids: frozenset[str] = frozenset()
    series_description: str | None = None
    volume_strategy: VolumeStrategy = VolumeStrategy.CENTRAL
    slice_count: int = 1
    volume_modalities: frozenset[str] = DEFAULT_VOLUME_MODALITIES
    exclude_localizers: bool = True

    def __post_init__(self) -> None:
        for name in ("modalities", "body_parts", "view_positions", "volume_modalities"):
            object.__setattr__(self, name, _upper_set(name, getattr(self, name)))
        if isinstance(self.sop_class_uids, str):
            raise ValueError("sop_class_uids must be a collection of UIDs, not one string")
        object.__setattr__(
            self, "sop_class_uids", frozenset(str(v).strip() for v in self.sop_class_uids)
        )
        if self.series_description is not None:
            if not isinstance(self.series_description, str):
                raise ValueError(
                    "series_description must be a regular expression string, got "
                    f"{self.series_description!r}"
                )
            try:
                re.compile(self.series_description)
            except re.error as exc:
                raise ValueError(
                    f"series_description is not a valid regular expression: {exc}"
                ) from None
        try:
            object.__setattr__(self, "volume_strategy", VolumeStrategy(self.volume_strategy))
        except ValueError:
            raise ValueError(
                f"volume_strategy must be one of {[s.value for s in VolumeStrategy]}, got "
                f"{self.volume_strategy!r}"
            ) from None
        if (
            isinstance(self.slice_count, bool)
            or not isinstance(self.slice_count, int)
            or self.slice_count < 1
        ):
            raise ValueError(f"slice_count must be an int >= 1, got {self.slice_count!r}")
        if self.volume_strategy is not VolumeStrategy.EVENLY_SPACED and self.slice_count != 1:
            raise ValueError(
                f"slice_count applies only to evenly_spaced; got {self.slice_count} with "
                f"{self.volume_strategy}"
            )
        if not isinstance(self.exclude_localizers, bool):
            raise ValueError(f"exclude_localizers must be a bool, got {self.exclude_localizers!r}")

    def accepts(self, dataset: pydicom.Dataset, *, require_pixel_data: bool = True) -> bool:
        """Whether ``dataset`` passes the filters (it must also be an image; see
        :func:`select_images` for ``require_pixel_data``)."""
        if non_image_reason(dataset, require_pixel_data=require_pixel_data) is not None:
            return False
        if self.modalities and str(dataset.get("Modality", "")).upper() not in self.modalities:
            return False
        if (
            self.body_parts
            and str(dataset.get("BodyPartExamined", "") or "").upper() not in self.body_parts
        ):
            return False
        if self.sop_class_uids and str(dataset.get("SOPClassUID", "")) not in self.sop_class_uids:
            return False
        if self.view_positions and not (image_views(dataset) & self.view_positions):
            return False
        if self.series_description is not None and not re.search(
            self.series_description, str(dataset.get("SeriesDescription", "") or ""), re.IGNORECASE
        ):
            return False
        if self.exclude_localizers:
            image_type = dataset.get("ImageType") or []
            if isinstance(image_type, str):
                image_type = image_type.split("\\")
            if len(image_type) >= 3 and str(image_type[2]).upper() == "LOCALIZER":
                return False
        return True

    def pick(self, count: int) -> list[int]:
        """Indices (0-based, ascending) of the slices to take from an ordered stack of ``count``."""
        if count <= 0:
            return []
        if self.volume_strategy is VolumeStrategy.ALL:
            return list(range(count))
        n = 1 if self.volume_strategy is VolumeStrategy.CENTRAL else min(self.slice_count, count)
        # Centre of each of n equal parts: for n = 1 this is the central slice (count // 2).
        return sorted({min(count - 1, int(math.floor((k + 0.5) * count / n))) for k in range(n)})


#: Frontal chest radiographs (CR/DX, chest, PA or AP), as MedRegA's chest tasks expect.
FRONTAL_CHEST_RADIOGRAPHS = ImageSelection(
    modalities=frozenset({"CR", "DX"}),
    body_parts=frozenset({"CHEST"}),
    view_positions=frozenset({"PA", "AP"}),
)


def image_views(dataset: pydicom.Dataset) -> frozenset[str]:
    """The view names of an image: View Position (0018,5101) and, for each View Code
    Sequence (0054,0220) item, its code value and the term :data:`VIEW_CODES` maps it to."""
    views = set()
    position = str(dataset.get("ViewPosition", "") or "").strip().upper()
    if position:
        views.add(position)
    for item in dataset.get("ViewCodeSequence") or []:
        code = str(item.get("CodeValue", "") or "").strip()
        if code:
            views.add(code.upper())
            if code in VIEW_CODES:
                views.add(VIEW_CODES[code])
    return frozenset(views)


def _floats(value: object, count: int) -> np.ndarray | None:
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if array.shape != (count,) or not np.all(np.isfinite(array)):
        return None
    return array


def _normal(orientation: object) -> np.ndarray | None:
    cosines = _floats(orientation, 6)
    if cosines is None:
        return None
    normal = np.cross(cosines[:3], cosines[3:])
    length = float(np.linalg.norm(normal))
    return None if length < 1e-6 else normal / length


def _orientation_key(normal: np.ndarray | None) -> tuple[float, ...] | None:
    return None if normal is None else tuple(np.round(normal, 3) + 0.0)


def _frame_positions(dataset: pydicom.Dataset, count: int) -> list[float] | None:
    """Position of each frame along the normal from the functional groups, or None."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) < count:
        return None
    shared = (dataset.get("SharedFunctionalGroupsSequence") or [None])[0]
    shared_orientation = None
    if shared is not None and shared.get("PlaneOrientationSequence"):
        shared_orientation = shared.PlaneOrientationSequence[0].get("ImageOrientationPatient")
    positions = []
    for index in range(count):
        item = per_frame[index]
        plane = item.get("PlanePositionSequence")
        orientation = shared_orientation
        if item.get("PlaneOrientationSequence"):
            orientation = item.PlaneOrientationSequence[0].get("ImageOrientationPatient")
        normal = _normal(orientation) if orientation is not None else None
        position = _floats(plane[0].get("ImagePositionPatient"), 3) if plane else None
        if normal is None or position is None:
            return None
        positions.append(float(position @ normal))
    return positions


def _instance_number(dataset: pydicom.Dataset) -> int:
    try:
        return int(dataset.get("InstanceNumber"))
    except (TypeError, ValueError):
        return 0


def select_images(
    datasets: Iterable[pydicom.Dataset],
    selection: ImageSelection,
    *,
    require_pixel_data: bool = True,
) -> list[tuple[pydicom.Dataset, int | None]]:
    """Choose the images and frames of a study that go to the model.

    Parameters
    ----------
    datasets
        The study's instances (any order; non-images such as SEG, SR and PR are
        skipped, never selected).
    selection
        Filters and the slice strategy.
    require_pixel_data
        Refuse instances without Pixel Data (the default). Pass ``False`` to select
        from headers read with ``pydicom.dcmread(..., stop_before_pixels=True)``;
        non-image SOP classes and modalities are refused either way. (Whole datasets
        read with ``defer_size`` keep their pixel data on disk and need no flag.)

    Returns
    -------
    list of (dataset, frame_number)
        ``frame_number`` is ``None`` for single-frame images and 1-based for
        multi-frame ones. Stacks appear in the order their first instance was given;
        slices within a stack in ascending position along the normal.
    """
    if not isinstance(selection, ImageSelection):
        raise TypeError(f"selection must be an ImageSelection, got {type(selection).__name__}")
    out: list[tuple[pydicom.Dataset, int | None]] = []
    stacks: dict[tuple[object, ...], list[pydicom.Dataset]] = {}
    order: list[tuple[object, ...] | int] = []
    singles: list[pydicom.Dataset] = []
    for dataset in datasets:
        reason = non_image_reason(dataset, require_pixel_data=require_pixel_data)
        if reason is not None:
            logger.debug(
                "skipping SOP instance %s: %s",
                short_uid(dataset.get("SOPInstanceUID", "?")),
                reason,
            )
            continue
        if not selection.accepts(dataset, require_pixel_data=require_pixel_data):
            continue
        modality = str(dataset.get("Modality", "") or "").upper()
        if is_multi_frame(dataset):
            singles.append(dataset)
            order.append(len(singles) - 1)
        elif modality in selection.volume_modalities:
            normal = _normal(dataset.get("ImageOrientationPatient"))
            key = (str(dataset.get("SeriesInstanceUID", "")), _orientation_key(normal))
            if key not in stacks:
                stacks[key] = []
                order.append(key)
            stacks[key].append(dataset)
        else:
            singles.append(dataset)
            order.append(len(singles) - 1)
    for entry in order:
        if isinstance(entry, int):
            out.extend(_pick_frames(singles[entry], selection))
        else:
            out.extend((dataset, None) for dataset in _pick_slices(stacks[entry], selection))
    return out


def _pick_slices(stack: list[pydicom.Dataset], selection: ImageSelection) -> list[pydicom.Dataset]:
    normal = _normal(stack[0].get("ImageOrientationPatient"))
    positions = [_floats(ds.get("ImagePositionPatient"), 3) for ds in stack]
    if normal is not None and all(p is not None for p in positions):
        keys = [
            (float(p @ normal), _instance_number(ds))
            for p, ds in zip(positions, stack, strict=True)
        ]
    else:
        logger.warning(
            "series %s lacks Image Position/Orientation (Patient) on some slices; ordering by "
            "Instance Number",
            short_uid(stack[0].get("SeriesInstanceUID", "?")),
        )
        keys = [(float(_instance_number(ds)), 0) for ds in stack]
    ordered = [ds for _, ds in sorted(zip(keys, stack, strict=True), key=lambda pair: pair[0])]
    return [ordered[i] for i in selection.pick(len(ordered))]


def _pick_frames(
    dataset: pydicom.Dataset, selection: ImageSelection
) -> list[tuple[pydicom.Dataset, int | None]]:
    if not is_multi_frame(dataset):
        return [(dataset, None)]
    try:
        count = frame_count(dataset)
    except PixelError as exc:
        logger.warning(
            "skipping SOP instance %s: %s", short_uid(dataset.get("SOPInstanceUID", "?")), exc
        )
        return []
    positions = _frame_positions(dataset, count)
    frames = list(range(1, count + 1))
    if positions is not None:
        frames = [f for _, f in sorted(zip(positions, frames, strict=True))]
    return [(dataset, frames[i]) for i in selection.pick(count)]
