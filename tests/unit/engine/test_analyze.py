"""Tests for engine.analyze: real DICOM datasets through the real pixel pipeline,
a fake model that answers in the MedRegA grammar, and the merged GroundedReport."""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from engine import vocabulary
from engine.analyze import AnalysisError, analyze_study
from engine.batching import MicroBatcher
from engine.model import GenerationRequest, ModelError, RegionAwareModel, ResizeMode
from engine.pixels import FRONTAL_CHEST_RADIOGRAPHS, ImageSelection
from engine.report import Box, FindingKind, GroundedReport, ModelInfo, Task

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
ANY_IMAGE = ImageSelection()
CREATED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

#: The bright rectangle drawn on the synthetic radiograph, in source pixels (x_min, y_min, x_max,
#: y_max).
RECT = (60, 40, 150, 100)


def chest_dx(
    columns: int = 300,
    rows: int = 200,
    *,
    rect: tuple[int, int, int, int] | None = RECT,
    study_uid: str | None = None,
    body_part: str = "CHEST",
    modality: str = "DX",
    sop_class_uid: str = DX_STORAGE,
) -> pydicom.Dataset:
    """A small uncompressed frontal chest DX (non-square) with one bright rectangle."""
    pixels = np.full((rows, columns), 200, dtype=np.uint16)
    if rect is not None:
        x0, y0, x1, y1 = rect
        pixels[y0:y1, x0:x1] = 3800
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = pixels.tobytes()
    return ds


def seg_object(study_uid: str) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.SOPClassUID = SEG_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.Modality = "SEG"
    return ds


def bright_box_999(image: np.ndarray) -> tuple[int, int, int, int]:
    """A tiny 'detector': the bright area of the model input in MedRegA 0–999
    coordinates, rounded outwards (what a perfect model would say)."""
    height, width = image.shape[:2]
    rows, cols = np.nonzero(image[..., 0] > 0.5)
    return (
        math.floor(cols.min() / width * 999),
        math.floor(rows.min() / height * 999),
        math.ceil((cols.max() + 1) / width * 999),
        math.ceil((rows.max() + 1) / height * 999),
    )


class FakeModel(RegionAwareModel):
    """Answers each request with ``answer(request)``; records every batch."""

    def __init__(
        self,
        answer: Callable[[GenerationRequest], str],
        *,
        resize_mode: ResizeMode = ResizeMode.STRETCH,
        version: str = "1",
        max_batch_size: int = 3,
        tasks: tuple[Task, ...] = tuple(Task),
        languages: tuple[str, ...] = ("en", "zh-CN"),
    ) -> None:
        self.info = ModelInfo.for_version(
            name="fake-grounder", version=version, manufacturer="tests"
        )
        self.input_size = (448, 448)
        self.resize_mode = resize_mode
        self.languages = languages
        self.tasks = tasks
        self.max_batch_size = max_batch_size
        self.answer = answer
        self.batches: list[list[GenerationRequest]] = []
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        with self._lock:
            self.batches.append(list(requests))
        assert len(requests) <= self.max_batch_size
        return [self.answer(r) for r in requests]

    @property
    def requests(self) -> list[GenerationRequest]:
        return [r for batch in self.batches for r in batch]


def detector_answer(request: GenerationRequest) -> str:
    """The bright area as a nodule, with a score, in the request's language."""
    x1, y1, x2, y2 = bright_box_999(request.image)
    box = f"<box>[[{x1}, {y1}, {x2}, {y2}]]</box><score>0.82</score>"
    if request.language == "zh-CN":
        return f"<ref>结节</ref>{box}：右上肺野结节，置信度 0.82。"
    return f"<ref>nodule</ref>{box}: Nodule in the right upper zone, confidence 0.82."


def fixed(texts: dict[str, str]) -> Callable[[GenerationRequest], str]:
    return lambda request: texts[request.language]


def analyze(datasets, model, **kwargs) -> GroundedReport:
    kwargs.setdefault("selection", ANY_IMAGE)
    kwargs.setdefault("created_at", CREATED)
    return analyze_study(datasets, model, **kwargs)


# -- boxes land on the right source pixels -------------------------------------------


@pytest.mark.parametrize("resize_mode", [ResizeMode.STRETCH, ResizeMode.LETTERBOX])
def test_detected_box_lands_on_the_source_rectangle_of_a_non_square_image(resize_mode):
    ds = chest_dx(300, 200)
    model = FakeModel(detector_answer, resize_mode=resize_mode)
    report = analyze([ds], model, selection=FRONTAL_CHEST_RADIOGRAPHS)
    assert report.problems == ()
    (finding,) = report.findings
    (region,) = finding.regions
    assert region.image.sop_instance_uid == ds.SOPInstanceUID and region.image.frame_number is None
    # within one model pixel (300/448 source px) plus one 0-999 step (300/999) and the resampling
    # blur
    for got, want in zip(
        (region.box.x_min, region.box.y_min, region.box.x_max, region.box.y_max), RECT, strict=True
    ):
        assert abs(got - want) <= 2.0, (region.box, RECT)
    # every request saw the exact model input size
    assert all(r.image.shape == (448, 448, 3) for r in model.requests)


def test_medrega_coordinates_are_divided_by_999_not_1000():
    # golden: (0, 0, 999, 999) is the whole source image; 333/999 of 300 columns is exactly 100
    ds = chest_dx(300, 200, rect=None)
    answer = "<ref>right lung</ref><box>[[0, 0, 999, 999], [333, 333, 666, 999]]</box>: Clear."
    report = analyze([ds], FakeModel(fixed({"en": answer})), languages=("en",))
    boxes = [r.box for r in report.findings[0].regions]
    assert boxes[0] == Box(0, 0, 300, 200)
    assert boxes[1].x_min == pytest.approx(100.0) and boxes[1].x_max == pytest.approx(200.0)
    assert boxes[1].y_min == pytest.approx(200 / 3) and boxes[1].y_max == pytest.approx(200.0)


def test_real_jpeg2000_chest_radiograph_boxes_map_to_its_pixel_grid(shared_data):
    # RG1_J2KI.dcm: CR chest PA, 1841 columns x 1955 rows, MONOCHROME1, JPEG 2000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = pydicom.dcmread(shared_data / "dicom" / "RG1_J2KI.dcm")
    answer = (
        "<ref>right lung</ref><box>[[0, 0, 999, 999]]</box>, "
        "<ref>left lung</ref><box>[[500, 250, 999, 750]]</box>: Clear."
    )
    model = FakeModel(fixed({"en": answer}))
    report = analyze([ds], model, selection=FRONTAL_CHEST_RADIOGRAPHS, languages=("en",))
    assert report.problems == ()
    assert report.study_instance_uid == ds.StudyInstanceUID
    whole, part = (f.regions[0].box for f in report.findings)
    assert whole == Box(0, 0, 1841, 1955)
    assert part.x_min == pytest.approx(500 / 999 * 1841) and part.x_max == pytest.approx(1841)
    assert part.y_min == pytest.approx(250 / 999 * 1955) and part.y_max == pytest.approx(
        750 / 999 * 1955
    )
    # the model saw a real image: MONOCHROME1 inverted, not blank
    image = model.requests[0].image
    assert image.shape == (448, 448, 3) and float(image.std()) > 0.05


# -- bilingual merging -----------------------------------------------------------------


def test_languages_merge_by_vocabulary_key_into_bilingual_findings():
    ds = chest_dx()
    model = FakeModel(detector_answer)
    report = analyze([ds], model)
    (finding,) = report.findings
    assert finding.label.as_dict() == {"en": "nodule", "zh-CN": "结节"}
    assert finding.description.as_dict() == {
        "en": "Nodule in the right upper zone, confidence 0.82.",
        "zh-CN": "右上肺野结节，置信度 0.82。",
    }
    assert finding.kind is FindingKind.ABNORMALITY
    assert finding.confidence == pytest.approx(0.82)
    assert len(finding.regions) == 1  # regions come from the primary language only
    assert report.impression.as_dict() == finding.description.as_dict()
    assert report.languages == ("en", "zh-CN")
    assert [(r.language, r.task) for r in model.requests] == [
        ("en", Task.GROUNDED_REPORT),
        ("zh-CN", Task.GROUNDED_REPORT),
    ]
    assert "<ref>结节</ref>" in report.raw_output and "<ref>nodule</ref>" in report.raw_output
    assert report.created_at == CREATED and report.model == model.info


def test_structures_two_refs_one_description_and_canonical_names():
    en = (
        "<ref>Right Lung</ref><box>[[10, 10, 480, 900]]</box>, <ref>left lung</ref><box>[[520, "
        "10, 990, 900]]</box>: No focal consolidation. <ref>cardiac silhouette</ref><box>[[300, "
        "400, 700, 800]]</box>: Normal size."
    )
    zh = (
        "<ref>右肺</ref><box>[[11, 10, 480, 900]]</box>、"
        "<ref>左肺</ref><box>[[520, 10, 990, 900]]</box>：未见实变。"
        "<ref>心影</ref><box>[[300, 400, 700, 800]]</box>：心影大小正常。"
    )
    report = analyze(
        [chest_dx()], FakeModel(fixed({"en": en, "zh-CN": zh})), targets=("right lung", "左肺")
    )
    assert report.problems == ()
    labels = [f.label.as_dict() for f in report.findings]
    assert labels == [
        {"en": "right lung", "zh-CN": "右肺"},
        {"en": "left lung", "zh-CN": "左肺"},
        {"en": "cardiac silhouette", "zh-CN": "心影"},
    ]
    assert all(f.kind is FindingKind.ANATOMY for f in report.findings)
    assert report.findings[0].description.as_dict() == {
        "en": "No focal consolidation.",
        "zh-CN": "未见实变。",
    }
    assert report.findings[1].description == report.findings[0].description
    assert all(f.confidence is None for f in report.findings)  # MedRegA gives no scores
    assert len({f.tracking_uid for f in report.findings}) == 3
    assert report.impression.as_dict() == {
        "en": "No focal consolidation. Normal size.",
        "zh-CN": "未见实变。心影大小正常。",
    }


def test_targets_are_translated_per_language():
    model = FakeModel(fixed({"en": "", "zh-CN": ""}))
    analyze([chest_dx()], model, targets=("right lung", "左肺", "carotid vessel wall"))
    by_language = {r.language: r.targets for r in model.requests}
    assert by_language == {
        "en": ("right lung", "left lung", "carotid vessel wall"),
        "zh-CN": ("右肺", "左肺", "carotid vessel wall"),
    }


def test_unknown_labels_pair_by_order_when_the_counts_agree():
    en = (
        "<ref>foo body</ref><box>[[1, 2, 30, 40]]</box>: first. <ref>bar "
        "body</ref><box>[[50, 50, 90, 90]]</box>: second."
    )
    zh = (
        "<ref>甲体</ref><box>[[1, 2, 30, 40]]</box>：第一。"
        "<ref>乙体</ref><box>[[50, 50, 90, 90]]</box>：第二。"
    )
    report = analyze([chest_dx()], FakeModel(fixed({"en": en, "zh-CN": zh})))
    assert report.problems == ()
    assert [f.label.as_dict() for f in report.findings] == [
        {"en": "foo body", "zh-CN": "甲体"},
        {"en": "bar body", "zh-CN": "乙体"},
    ]
    assert report.findings[1].description.as_dict() == {"en": "second.", "zh-CN": "第二。"}
    assert all(f.kind is FindingKind.ABNORMALITY for f in report.findings)


def test_mismatched_languages_keep_only_reliable_text_and_record_problems():
    en = (
        "<ref>nodule</ref><box>[[1, 2, 30, 40]]</box>: Nodule. <ref>foo body</ref><box>[[50, 50, "
        "90, 90]]</box>: first. <ref>bar body</ref><box>[[60, 60, 99, 99]]</box>: second."
    )
    zh = (
        "<ref>肿块</ref><box>[[1, 2, 30, 40]]</box>：肿块。"
        "<ref>甲体</ref><box>[[50, 50, 90, 90]]</box>：第一。"
    )
    report = analyze([chest_dx()], FakeModel(fixed({"en": en, "zh-CN": zh})))
    nodule, foo, bar = report.findings
    # the vocabulary name is bilingual, but the zh text about a *mass* is not this nodule's
    assert nodule.label.as_dict() == {"en": "nodule", "zh-CN": "结节"}
    assert nodule.description.as_dict() == {"en": "Nodule."}
    # 2 unknown refs in en, 1 in zh: no pairing by order, English only
    assert foo.label.as_dict() == {"en": "foo body"} and foo.description.as_dict() == {
        "en": "first."
    }
    assert bar.description.as_dict() == {"en": "second."}
    assert len(report.findings) == 3  # nothing invented from the zh side
    text = " | ".join(report.problems)
    assert "no counterpart for 'nodule'" in text
    assert "cannot be paired by order" in text
    assert "refs the primary output lacks (肿块" in text


def test_box_without_ref_gets_the_unlabelled_label_and_description_falls_back_to_label():
    report = analyze(
        [chest_dx()],
        FakeModel(fixed({"en": "<box>[[1, 2, 30, 40]]</box>"})),
        languages=("en",),
        task=Task.DETECTION,
    )
    (finding,) = report.findings
    assert finding.label["en"] == vocabulary.UNLABELLED_REGION["en"]
    assert finding.description == finding.label


# -- negative, unreadable and text-only outputs ------------------------------------------


def test_nothing_found_gives_an_explicit_negative_report():
    report = analyze([chest_dx()], FakeModel(fixed({"en": "", "zh-CN": "  "})))
    assert report.findings == ()
    assert report.impression == vocabulary.NEGATIVE_REPORT
    assert report.problems == ()
    ct = chest_dx(body_part="ABDOMEN", modality="CT", sop_class_uid=CT_STORAGE)
    report = analyze([ct], FakeModel(fixed({"en": "", "zh-CN": ""})))
    assert report.impression == vocabulary.NEGATIVE_REPORT_GENERIC


def test_unreadable_output_is_not_a_negative_report():
    model = FakeModel(fixed({"en": "<ref>nodule</ref><box>[[1, 2, 3]]</box><ref>ma", "zh-CN": ""}))
    report = analyze([chest_dx()], model)
    # the ref survives without its box: a text-only finding, and the problems say why
    assert [f.regions for f in report.findings] == [()]
    assert any("needs 4 numbers" in p for p in report.problems)
    assert any("unclosed <ref>" in p for p in report.problems)
    report = analyze(
        [chest_dx()], FakeModel(fixed({"en": "<box>[[1, 2, 3, 4, 5]]</box>", "zh-CN": ""}))
    )
    assert report.findings == ()
    assert report.impression == vocabulary.UNREADABLE_OUTPUT
    assert report.problems


def test_plain_report_task_goes_to_the_impression():
    texts = {
        "en": "Findings: clear lungs. Impression: normal.",
        "zh-CN": "影像诊断：双肺清晰。影像结论：未见异常。",
    }
    report = analyze([chest_dx()], FakeModel(fixed(texts)), task=Task.REPORT)
    assert report.findings == ()
    assert report.impression.as_dict() == texts
    assert report.task is Task.REPORT


# -- identity and determinism ------------------------------------------------------------


def test_tracking_uids_are_deterministic_and_change_with_the_model_version():
    ds = chest_dx()
    first = analyze([ds], FakeModel(detector_answer))
    again = analyze([ds], FakeModel(detector_answer))
    other = analyze([ds], FakeModel(detector_answer, version="2"))
    assert [f.tracking_uid for f in first.findings] == [f.tracking_uid for f in again.findings]
    assert first.findings[0].tracking_uid != other.findings[0].tracking_uid
    assert GroundedReport.from_json(first.to_json()) == first


def test_several_images_each_keep_their_own_regions():
    study = generate_uid()
    a, b = (
        chest_dx(300, 200, study_uid=study),
        chest_dx(200, 300, study_uid=study, rect=(20, 30, 80, 250)),
    )
    report = analyze([a, b], FakeModel(detector_answer), languages=("en",))
    assert [f.regions[0].image.sop_instance_uid for f in report.findings] == [
        a.SOPInstanceUID,
        b.SOPInstanceUID,
    ]
    box = report.findings[1].regions[0].box
    assert all(
        abs(g - w) <= 2.0
        for g, w in zip((box.x_min, box.y_min, box.x_max, box.y_max), (20, 30, 80, 250))
    )
    assert len(set(report.images)) == 2


# -- batching, chunking, regional CoT ----------------------------------------------------


def test_requests_are_chunked_to_the_model_batch_size_or_sent_through_a_batcher():
    study = generate_uid()
    images = [chest_dx(study_uid=study) for _ in range(4)]
    model = FakeModel(detector_answer, max_batch_size=3)
    direct = analyze(images, model)
    assert [len(b) for b in model.batches] == [3, 3, 2]  # 4 images x 2 languages
    batched_model = FakeModel(detector_answer, max_batch_size=3)
    with MicroBatcher(batched_model, max_batch_size=8, max_wait_ms=5) as batcher:
        via_batcher = analyze(images, batched_model, generate=batcher.generate)
    assert via_batcher == direct
    assert batcher.stats().requests_completed == 8


def test_regional_cot_puts_the_first_pass_regions_in_the_second_prompt():
    def answer(request: GenerationRequest) -> str:
        if request.task is Task.TEXT_TO_REGION:
            return (
                "<ref>nodule</ref><box>[[600, 100, 700, 200]]</box>, "
                "<ref>mass</ref><box>[[10, 500, 90, 600]]</box>"
            )
        return detector_answer(request)

    model = FakeModel(answer)
    report = analyze([chest_dx()], model, regional_cot=True, targets=("nodule",))
    first, *second = model.requests
    assert (first.task, first.language, first.targets) == (Task.TEXT_TO_REGION, "en", ("nodule",))
    assert [r.regions for r in second] == [((600, 100, 700, 200), (10, 500, 90, 600))] * 2
    assert [r.task for r in second] == [Task.GROUNDED_REPORT] * 2
    assert "text_to_region" in report.raw_output
    assert len(report.findings) == 1  # findings come from the task's answer, not the first pass


def test_regional_cot_with_a_report_gives_targets_only_to_the_first_pass():
    def answer(request: GenerationRequest) -> str:
        if request.task is Task.TEXT_TO_REGION:
            return "<ref>nodule</ref><box>[[600, 100, 700, 200]]</box>"
        return {"en": "Nodule in the left upper zone.", "zh-CN": "左上肺野结节。"}[request.language]

    model = FakeModel(answer)
    report = analyze([chest_dx()], model, task=Task.REPORT, regional_cot=True, targets=("结节",))
    first, *second = model.requests
    assert first.targets == ("nodule",)  # translated into the primary language
    assert [(r.task, r.targets, r.regions) for r in second] == [
        (Task.REPORT, (), ((600, 100, 700, 200),))
    ] * 2
    assert report.findings == ()
    assert report.impression.as_dict() == {
        "en": "Nodule in the left upper zone.",
        "zh-CN": "左上肺野结节。",
    }


# -- errors ----------------------------------------------------------------------------


def test_no_usable_image_lists_every_reason():
    study = generate_uid()
    ct = chest_dx(study_uid=study, body_part="HEAD", modality="CT", sop_class_uid=CT_STORAGE)
    broken = chest_dx(study_uid=study)
    broken.PixelData = broken.PixelData[:100]  # truncated pixel data
    lateral = chest_dx(study_uid=study)
    lateral.ViewPosition = "LL"
    with pytest.raises(AnalysisError) as caught:
        analyze(
            [seg_object(study), ct, broken, lateral],
            FakeModel(detector_answer),
            selection=FRONTAL_CHEST_RADIOGRAPHS,
        )
    message = str(caught.value)
    assert message.startswith("no usable images")
    assert "Segmentation" in message or "SEG" in message
    assert "Modality (0008,0060) CT is not one of CR, DX" in message
    assert "view (LL) is not one of AP, PA" in message
    assert "Explicit VR Little Endian" in message  # engine.pixels names the transfer syntax
    assert message.count("SOP instance") == 4


def test_error_messages_carry_hashed_uids_never_part_of_a_uid():
    """Messages reach logs and the audit trail: no UID digits in them, only engine.uids' token."""
    from engine.uids import short_uid

    study = generate_uid()
    ct = chest_dx(study_uid=study, body_part="HEAD", modality="CT", sop_class_uid=CT_STORAGE)
    with pytest.raises(AnalysisError) as caught:
        analyze([ct], FakeModel(detector_answer), selection=FRONTAL_CHEST_RADIOGRAPHS)
    message = str(caught.value)
    assert ct.SOPInstanceUID[-8:] not in message and study[-8:] not in message
    assert f"SOP instance {short_uid(ct.SOPInstanceUID)}" in message


def test_an_unusable_image_next_to_a_good_one_is_a_problem_not_a_failure():
    study = generate_uid()
    good, broken = chest_dx(study_uid=study), chest_dx(study_uid=study)
    broken.PixelData = broken.PixelData[:100]
    report = analyze([broken, good], FakeModel(detector_answer), languages=("en",))
    assert [f.regions[0].image.sop_instance_uid for f in report.findings] == [good.SOPInstanceUID]
    assert len(report.problems) == 1 and "skipped" in report.problems[0]


def test_argument_and_study_errors():
    model = FakeModel(detector_answer, languages=("en",), tasks=(Task.GROUNDED_REPORT,))
    with pytest.raises(AnalysisError, match="cannot answer in 'zh-CN'"):
        analyze([chest_dx()], model)
    with pytest.raises(AnalysisError, match="does not do report"):
        analyze([chest_dx()], model, languages=("en",), task=Task.REPORT)
    with pytest.raises(AnalysisError, match="regional CoT needs text_to_region"):
        analyze([chest_dx()], model, languages=("en",), regional_cot=True, targets=("nodule",))
    capable = FakeModel(detector_answer)
    with pytest.raises(AnalysisError, match="regional CoT needs targets"):
        analyze([chest_dx()], capable, regional_cot=True)
    with pytest.raises(AnalysisError, match="which takes none"):
        analyze([chest_dx()], capable, task=Task.DETECTION, regional_cot=True, targets=("nodule",))
    with pytest.raises(AnalysisError, match="region_to_text needs regions"):
        analyze([chest_dx()], capable, task=Task.REGION_TO_TEXT)
    with pytest.raises(AnalysisError, match="non-empty names"):
        analyze([chest_dx()], capable, targets="nodule")
    with pytest.raises(AnalysisError, match="timezone-aware"):
        analyze([chest_dx()], capable, created_at=datetime(2026, 1, 1))
    with pytest.raises(AnalysisError, match="no datasets given"):
        analyze([], capable)
    with pytest.raises(AnalysisError, match="2 different studies"):
        analyze([chest_dx(), chest_dx()], FakeModel(detector_answer))
    wrong = FakeModel(detector_answer)
    wrong.generate = lambda requests: ["x"]  # type: ignore[method-assign]
    with pytest.raises(AnalysisError, match="returned 1 outputs for 2 requests"):
        analyze([chest_dx()], wrong)


def test_model_errors_propagate_unchanged():
    def broken(request: GenerationRequest) -> str:
        raise ModelError("CUDA out of memory")

    with pytest.raises(ModelError, match="out of memory"):
        analyze([chest_dx()], FakeModel(broken))
