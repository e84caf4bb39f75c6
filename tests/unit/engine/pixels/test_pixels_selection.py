"""Series/image selection: filters, and slices picked by position along the normal."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from engine.pixels import (
    FRONTAL_CHEST_RADIOGRAPHS,
    ImageSelection,
    VolumeStrategy,
    select_images,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
CR = "1.2.840.10008.5.1.4.1.1.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"

ROW = np.array([0.8, 0.0, 0.6])
COL = np.array([0.0, 1.0, 0.0])
NORMAL = np.cross(ROW, COL)  # (-0.6, 0, 0.8)
PIXELS = np.zeros((2, 2), dtype=np.uint16)


def _oblique_series(make_image, count: int = 12, seed: int = 0):
    """``count`` CT slices 2 mm apart along an oblique normal, in-plane shifts that
    scramble z, Instance Numbers shuffled, given in shuffled order. Each slice's
    ``ImageComments`` holds its true index along the normal."""
    rng = np.random.default_rng(seed)
    series_uid = generate_uid()
    numbers = rng.permutation(count) + 1
    shifts = rng.uniform(-60, 60, count)
    slices = []
    for k in range(count):
        position = 100.0 + 2.0 * k * NORMAL + shifts[k] * ROW
        ds = make_image(
            PIXELS,
            sop_class_uid=CT,
            modality="CT",
            SeriesInstanceUID=series_uid,
            ImageOrientationPatient=[float(v) for v in (*ROW, *COL)],
            ImagePositionPatient=[float(v) for v in position],
            InstanceNumber=int(numbers[k]),
            ImageComments=str(k),
        )
        slices.append(ds)
    order = rng.permutation(count)
    return [slices[i] for i in order]


def _truth(selected) -> list[int]:
    return [int(ds.ImageComments) for ds, _ in selected]


def test_central_slice_follows_position_not_instance_number(make_image) -> None:
    series = _oblique_series(make_image)
    selected = select_images(series, ImageSelection(volume_strategy=VolumeStrategy.CENTRAL))
    assert _truth(selected) == [6]  # 12 slices: index 12 // 2 along the normal
    assert selected[0][1] is None
    # the test can tell: neither Instance Number nor raw z would have picked slice 6
    by_number = sorted(series, key=lambda ds: int(ds.InstanceNumber))[6]
    by_z = sorted(series, key=lambda ds: float(ds.ImagePositionPatient[2]))[6]
    assert int(by_number.ImageComments) != 6 and int(by_z.ImageComments) != 6


def test_evenly_spaced_slices_follow_position(make_image) -> None:
    series = _oblique_series(make_image)
    selection = ImageSelection(volume_strategy=VolumeStrategy.EVENLY_SPACED, slice_count=3)
    # centres of three equal parts of 12 slices: 2, 6, 10, in ascending position
    assert _truth(select_images(series, selection)) == [2, 6, 10]
    five = ImageSelection(volume_strategy="evenly_spaced", slice_count=5)
    assert _truth(select_images(series, five)) == [1, 3, 6, 8, 10]
    many = ImageSelection(volume_strategy="evenly_spaced", slice_count=50)
    assert _truth(select_images(series, many)) == list(range(12))
    assert _truth(select_images(series, ImageSelection(volume_strategy="all"))) == list(range(12))


def test_series_are_kept_apart_in_order_of_appearance(make_image) -> None:
    a, b = _oblique_series(make_image, 5, seed=1), _oblique_series(make_image, 9, seed=2)
    selected = select_images([a[0], b[0], *a[1:], *b[1:]], ImageSelection())
    assert [ds.SeriesInstanceUID for ds, _ in selected] == [
        a[0].SeriesInstanceUID,
        b[0].SeriesInstanceUID,
    ]
    assert _truth(selected) == [2, 4]


def test_localizers_are_not_slices(make_image) -> None:
    series = _oblique_series(make_image, 5)
    scout = make_image(
        PIXELS,
        sop_class_uid=CT,
        modality="CT",
        SeriesInstanceUID=series[0].SeriesInstanceUID,
        ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
        ImageComments="scout",
        ImageOrientationPatient=[1, 0, 0, 0, 0, -1],
        ImagePositionPatient=[0, 0, 0],
    )
    selected = select_images([scout, *series], ImageSelection(volume_strategy="all"))
    assert "scout" not in [ds.ImageComments for ds, _ in selected] and len(selected) == 5


def test_without_positions_falls_back_to_instance_number(make_image) -> None:
    series = _oblique_series(make_image, 7)
    for ds in series:
        del ds.ImagePositionPatient
    selected = select_images(series, ImageSelection())
    assert int(selected[0][0].InstanceNumber) == 4


def _enhanced(make_image, positions_along_normal):
    frames = len(positions_along_normal)
    ds = make_image(
        np.zeros((frames, 2, 2), dtype=np.uint16),
        NumberOfFrames=frames,
        sop_class_uid=ENHANCED_CT,
        modality="CT",
    )
    orientation = Dataset()
    orientation.ImageOrientationPatient = [float(v) for v in (*ROW, *COL)]
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    items = []
    for d in positions_along_normal:
        plane = Dataset()
        plane.ImagePositionPatient = [float(v) for v in (d * NORMAL + 30.0 * ROW * (d % 3))]
        item = Dataset()
        item.PlanePositionSequence = Sequence([plane])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    return ds


def test_enhanced_multi_frame_orders_frames_by_plane_position(make_image) -> None:
    # frame k (1-based) lies at these positions along the normal
    positions = [8.0, 2.0, 0.0, 6.0, 4.0, 10.0, 12.0]
    ds = _enhanced(make_image, positions)
    # sorted by position: frames 3, 2, 5, 4, 1, 6, 7 -> central (index 3) is frame 4
    assert select_images([ds], ImageSelection()) == [(ds, 4)]
    evenly = ImageSelection(volume_strategy="evenly_spaced", slice_count=3)
    assert [f for _, f in select_images([ds], evenly)] == [2, 4, 6]  # indices 1, 3, 5
    del ds.PerFrameFunctionalGroupsSequence  # no positions: frame order
    assert select_images([ds], ImageSelection()) == [(ds, 4)]
    assert [f for _, f in select_images([ds], evenly)] == [2, 4, 6]


def _radiograph(make_image, *, modality="CR", body_part="CHEST", view=None, view_code=None, sop=CR):
    ds = make_image(PIXELS, sop_class_uid=sop, modality=modality, BodyPartExamined=body_part)
    if view is not None:
        ds.ViewPosition = view
    if view_code is not None:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = view_code, "SCT", "view"
        ds.ViewCodeSequence = Sequence([code])
    return ds


def test_frontal_chest_filter_keeps_pa_ap_and_drops_lateral(make_image) -> None:
    pa = _radiograph(make_image, view="PA")
    ap_by_code = _radiograph(
        make_image, modality="DX", sop=DX, view_code="399348003"
    )  # antero-posterior
    pa_by_code = _radiograph(make_image, modality="DX", sop=DX, view="", view_code="272479007")
    lateral = _radiograph(make_image, view="LL")
    lateral_by_code = _radiograph(
        make_image, modality="DX", sop=DX, view_code="399173006"
    )  # left lateral
    unknown_view = _radiograph(make_image)
    knee = _radiograph(make_image, body_part="KNEE", view="AP")
    ct = make_image(PIXELS, sop_class_uid=CT, modality="CT", BodyPartExamined="CHEST")
    seg = make_image(
        PIXELS,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
        modality="SEG",
        BodyPartExamined="CHEST",
        ViewPosition="PA",
    )
    study = [pa, ap_by_code, pa_by_code, lateral, lateral_by_code, unknown_view, knee, ct, seg]
    selected = select_images(study, FRONTAL_CHEST_RADIOGRAPHS)
    assert [ds for ds, _ in selected] == [pa, ap_by_code, pa_by_code]


def test_other_filters(make_image) -> None:
    a = make_image(PIXELS, modality="MR", SeriesDescription="T2 AX FLAIR")
    b = make_image(PIXELS, modality="MR", SeriesDescription="T1 SAG")
    c = make_image(PIXELS, modality="OT", SeriesDescription="t2 cor")
    assert [
        ds for ds, _ in select_images([a, b, c], ImageSelection(series_description=r"^t2"))
    ] == [a, c]
    only_sc = ImageSelection(sop_class_uids={"1.2.840.10008.5.1.4.1.1.7"}, modalities={"ot"})
    assert [ds for ds, _ in select_images([a, b, c], only_sc)] == [c]


def test_non_images_are_never_selected(make_image) -> None:
    image = make_image(PIXELS)
    sr = make_image(PIXELS, sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33", modality="SR")
    no_pixels = make_image(PIXELS)
    del no_pixels.PixelData
    assert select_images([sr, image, no_pixels], ImageSelection()) == [(image, None)]
    # headers read without pixel data can be selected on request; the SR still cannot
    headers = select_images([sr, image, no_pixels], ImageSelection(), require_pixel_data=False)
    assert headers == [(image, None), (no_pixels, None)]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"modalities": "CT"}, "not one string"),
        ({"series_description": "("}, "regular expression"),
        ({"slice_count": 3}, "evenly_spaced"),
        ({"volume_strategy": "evenly_spaced", "slice_count": 0}, "slice_count"),
        ({"volume_strategy": "middle"}, "volume_strategy"),
        ({"body_parts": [""]}, "empty"),
    ],
)
def test_selection_is_validated(kwargs, words) -> None:
    with pytest.raises(ValueError, match=words):
        ImageSelection(**kwargs)


def test_selection_is_frozen() -> None:
    selection = ImageSelection(modalities=["ct"])
    assert selection.modalities == frozenset({"CT"})
    with pytest.raises(AttributeError):
        selection.modalities = frozenset()  # type: ignore[misc]
