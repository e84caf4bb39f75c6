"""Fixtures shared by the exporter tests (SR, GSPS, FHIR).

The sources are two real chest radiographs from ``../shared/data/nih-cxr-boxes``
(NIH ChestX-ray14, see its README) wrapped in realistic DX For Presentation
headers (patient, study, series, equipment, DX anatomy/positioning modules,
ViewCodeSequence, PositionerType), written to bytes and read back so they look
like files received from a PACS. Both images belong to one study but to two
series; the second image is cropped to 512 x 480 so that exporters that use the
wrong image's Columns/Rows show it.

Stable fixture names (other exporter tests rely on them):

``source_images``
    list of 2 pydicom Datasets (ISO_IR 192 names, every patient attribute set).
``source_images_latin1``
    the same images (same UIDs) as a legacy ISO_IR 100 source with accented names.
``source_images_minimal``
    the same images with the optional / type-2 patient and study attributes
    missing or empty (no birth date, sex, accession number, study date, ...).
``grounded_report``
    a realistic 20-finding bilingual (en + zh-CN) GroundedReport on those images.
``edge_case_report``
    a small bilingual report with a very long sentence, a text-only finding, a
    box partly outside the image, a box entirely outside, a finding with two
    regions on two images, and Chinese-only punctuation.
``multiframe_source`` / ``multiframe_report``
    a real 10-frame Enhanced MR (its own study) and a report whose regions name
    frame numbers.
``reviewed_report`` / ``sign_off``
    ``grounded_report`` as a radiologist reviewed it (two findings rejected, one edited,
    one added) and the first sign-off of it (Jane Doe; predecessors = the model's SRs).

Every fixture returns fresh objects, so tests may modify them.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from engine.report import (
    Box,
    CodedConcept,
    Finding,
    FindingKind,
    GroundedReport,
    ImageRef,
    ModelInfo,
    Presence,
    Region,
    Task,
    Text,
    derive_uid,
)
from exporters.protocol import PredecessorDocument, SignOff, Verifier

REPO_ROOT = Path(__file__).resolve().parents[3]
NIH_IMAGES = (REPO_ROOT.parent / "shared" / "data" / "nih-cxr-boxes" / "images").resolve()

#: DX Image Storage - For Presentation (PS3.4 B.5).
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
STUDY_INSTANCE_UID = derive_uid("radground-test", "study", 1)
SERIES_INSTANCE_UIDS = (
    derive_uid("radground-test", "series", 1),
    derive_uid("radground-test", "series", 2),
)
SOP_INSTANCE_UIDS = (
    derive_uid("radground-test", "image", 1),
    derive_uid("radground-test", "image", 2),
)
#: (columns, rows) of the two source images.
IMAGE_SIZES = ((512, 512), (512, 480))
_PNGS = ("00005066_030.png", "00005066_005.png")
#: ImagerPixelSpacing (row, column) in mm from boxes.csv for those PNGs.
_SPACINGS = (("0.672", "0.8203"), ("0.684", "0.835"))

MODEL = ModelInfo.for_version(
    name="RadGround CXR Grounder", version="1.2.0", manufacturer="RadGround Project"
)
LANGUAGES = ("en", "zh-CN")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _pixels(index: int) -> np.ndarray:
    columns, rows = IMAGE_SIZES[index]
    png = NIH_IMAGES / _PNGS[index]
    if not png.is_file():
        pytest.fail(f"test image {png} not found; CI puts shared/ beside the repository")
    from PIL import Image

    with Image.open(png) as image:
        array = np.asarray(image.convert("L"), dtype=np.uint16)
    # 8-bit PNG -> 12-bit DX values; crop to this image's size.
    return np.ascontiguousarray((array[:rows, :columns] << 4) | (array[:rows, :columns] >> 4))


def _round_trip(ds: Dataset) -> Dataset:
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def make_source_image(index: int, *, pixels: np.ndarray) -> Dataset:
    """One DX For Presentation chest image of the test study (PS3.3 A.26)."""
    columns, rows = IMAGE_SIZES[index]
    view_pa = index == 0
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = SOP_INSTANCE_UIDS[index]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceCreationDate = "20260310"
    ds.InstanceCreationTime = "101502"
    # Patient module
    ds.PatientName = "Zhang^Wei=张^伟"
    ds.PatientID = "RG-0042"
    ds.IssuerOfPatientID = "RADGROUND-TEST-HOSPITAL"
    ds.PatientBirthDate = "19580417"
    ds.PatientSex = "M"
    ds.PatientAge = "067Y"
    # General Study module
    ds.StudyInstanceUID = STUDY_INSTANCE_UID
    ds.StudyDate = "20260310"
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = "Li^Na"
    ds.StudyID = "S1001"
    ds.AccessionNumber = "ACC20260310-7"
    ds.StudyDescription = "XR CHEST 2 VIEWS"
    ds.ProcedureCodeSequence = Sequence([_code("36572-6", "LN", "XR Chest AP and PA")])
    # General Series / DX Series modules
    ds.Modality = "DX"
    ds.SeriesInstanceUID = SERIES_INSTANCE_UIDS[index]
    ds.SeriesNumber = index + 1
    ds.SeriesDescription = "CHEST PA" if view_pa else "CHEST AP"
    ds.SeriesDate = "20260310"
    ds.SeriesTime = "101500"
    ds.BodyPartExamined = "CHEST"
    ds.PresentationIntentType = "FOR PRESENTATION"
    # Frame of reference is not required for DX; General Equipment
    ds.Manufacturer = "Acme Imaging"
    ds.InstitutionName = "RadGround Test Hospital"
    ds.StationName = "DR-ROOM-2"
    ds.ManufacturerModelName = "DR 3000"
    ds.SoftwareVersions = "4.2"
    ds.DeviceSerialNumber = "SN-1234"
    # General Image / General Acquisition
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"] if view_pa else ["R", "F"]
    ds.ContentDate = "20260310"
    ds.ContentTime = "101502"
    ds.AcquisitionDate = "20260310"
    ds.AcquisitionTime = "101501"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # Image Pixel module
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    # DX Anatomy Imaged
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = Sequence([_code("51185008", "SCT", "Chest")])
    # DX Image
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    # DX Detector
    ds.DetectorType = "SCINTILLATOR"
    ds.ImagerPixelSpacing = list(_SPACINGS[index])
    # DX Positioning
    ds.PositionerType = "NONE"
    ds.ViewPosition = "PA" if view_pa else "AP"
    ds.ViewCodeSequence = Sequence(
        [_code("399348003", "SCT", "antero-posterior")]
        if not view_pa
        else [_code("399299002", "SCT", "postero-anterior")]
    )
    ds.PatientOrientationCodeSequence = Sequence([_code("C86043", "NCIt", "erect")])
    # Acquisition Context module (type 2)
    ds.AcquisitionContextSequence = Sequence()
    # SOP Common
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.fixture(scope="session")
def _source_images_cache() -> list[Dataset]:
    return [_round_trip(make_source_image(i, pixels=_pixels(i))) for i in range(2)]


@pytest.fixture
def source_images(_source_images_cache: list[Dataset]) -> list[Dataset]:
    """Two DX chest images of one study (two series), UTF-8 (ISO_IR 192) headers."""
    return copy.deepcopy(_source_images_cache)


@pytest.fixture
def source_images_latin1(_source_images_cache: list[Dataset]) -> list[Dataset]:
    """The same images as a legacy ISO_IR 100 source: accented Latin-1 names."""
    images = []
    for ds in copy.deepcopy(_source_images_cache):
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = "Müller^Zoë^Renée"
        ds.ReferringPhysicianName = "Núñez^José"
        ds.InstitutionName = "Clínica São João"
        ds.StudyDescription = "Thorax 2 Ebenen (Röntgen)"
        images.append(_round_trip(ds))
    assert images[0].PatientName.original_string == "Müller^Zoë^Renée".encode("latin-1")
    return images


@pytest.fixture
def source_images_minimal(_source_images_cache: list[Dataset]) -> list[Dataset]:
    """The same images with optional patient/study attributes missing and type-2 ones empty."""
    images = []
    for ds in copy.deepcopy(_source_images_cache):
        for keyword in (
            "IssuerOfPatientID",
            "PatientAge",
            "StudyDescription",
            "ProcedureCodeSequence",
            "SeriesDescription",
            "InstitutionName",
            "StationName",
            "ManufacturerModelName",
            "SoftwareVersions",
            "DeviceSerialNumber",
            "SeriesDate",
            "SeriesTime",
            "InstanceCreationDate",
            "InstanceCreationTime",
            "AcquisitionDate",
            "AcquisitionTime",
        ):
            delattr(ds, keyword)
        ds.SpecificCharacterSet = None
        del ds.SpecificCharacterSet
        for keyword in (
            "PatientName",
            "PatientBirthDate",
            "PatientSex",
            "StudyDate",
            "StudyTime",
            "ReferringPhysicianName",
            "StudyID",
            "AccessionNumber",
            "Manufacturer",
        ):
            setattr(ds, keyword, "")
        images.append(_round_trip(ds))
    return images


def _ref(index: int, frame_number: int | None = None) -> ImageRef:
    return ImageRef(SOP_INSTANCE_UIDS[index], DX_FOR_PRESENTATION, frame_number)


def _finding(
    n: int,
    kind: str,
    label: tuple[str, str],
    sentence: tuple[str, str],
    boxes: list[tuple[int, tuple[float, float, float, float]]],
    *,
    presence: str = "present",
    confidence: float | None = None,
    concept: CodedConcept | None = None,
    report_key: str = "main",
) -> Finding:
    return Finding(
        kind=FindingKind(kind),
        label=Text({"en": label[0], "zh-CN": label[1]}),
        description=Text({"en": sentence[0], "zh-CN": sentence[1]}),
        regions=tuple(Region(image=_ref(i), box=Box(*b)) for i, b in boxes),
        tracking_uid=derive_uid("radground-test", report_key, "finding", n),
        presence=Presence(presence),
        confidence=confidence,
        concept=concept,
    )


#: (kind, (en label, zh label), (en sentence, zh sentence), [(image index, box)], presence,
#: confidence)
_MAIN_FINDINGS = [
    (
        "anatomy",
        ("right lung", "右肺"),
        ("The right lung is well expanded.", "右肺膨胀良好。"),
        [(0, (62.0, 88.5, 240.0, 430.0))],
        "present",
        0.97,
    ),
    (
        "anatomy",
        ("left lung", "左肺"),
        ("The left lung is well expanded.", "左肺膨胀良好。"),
        [(0, (270.0, 90.0, 450.0, 428.0))],
        "present",
        0.96,
    ),
    (
        "abnormality",
        ("cardiomegaly", "心脏增大"),
        (
            "The cardiac silhouette is enlarged (cardiothoracic ratio about 0.6).",
            "心影增大（心胸比约0.6）。",
        ),
        [(0, (138.58, 229.58, 408.68, 380.36))],
        "present",
        0.88,
    ),
    (
        "abnormality",
        ("pleural effusion", "胸腔积液"),
        (
            "Small left pleural effusion blunting the costophrenic angle.",
            "左侧少量胸腔积液，肋膈角变钝。",
        ),
        [(0, (74.81, 364.25, 88.46, 397.25))],
        "present",
        0.71,
    ),
    (
        "abnormality",
        ("infiltrate", "浸润"),
        ("Patchy infiltrate in the left mid zone.", "左中肺野斑片状浸润影。"),
        [(0, (265.96, 249.9, 387.13, 331.82))],
        "present",
        0.64,
    ),
    (
        "anatomy",
        ("heart", "心脏"),
        ("Heart outlined.", "心脏轮廓。"),
        [(0, (150.0, 220.0, 400.0, 390.0))],
        "present",
        None,
    ),
    (
        "anatomy",
        ("trachea", "气管"),
        ("The trachea is midline.", "气管居中。"),
        [(0, (236.0, 20.0, 262.0, 150.0))],
        "present",
        0.93,
    ),
    (
        "anatomy",
        ("mediastinum", "纵隔"),
        ("The mediastinum is not widened.", "纵隔未见增宽。"),
        [(0, (200.0, 60.0, 300.0, 260.0))],
        "present",
        None,
    ),
    (
        "abnormality",
        ("pneumothorax", "气胸"),
        ("No pneumothorax.", "未见气胸。"),
        [],
        "absent",
        None,
    ),
    (
        "abnormality",
        ("nodule", "结节"),
        ("A 9 mm nodule projects over the right upper zone.", "右上肺野见一9毫米结节影。"),
        [(0, (120.0, 140.0, 136.0, 156.0))],
        "present",
        0.42,
    ),
    (
        "anatomy",
        ("right hemidiaphragm", "右侧膈肌"),
        ("The right hemidiaphragm is well defined.", "右侧膈面清晰。"),
        [(0, (60.0, 380.0, 240.0, 440.0))],
        "present",
        None,
    ),
    (
        "abnormality",
        ("atelectasis", "肺不张"),
        ("Linear atelectasis at the left base.", "左下肺线状肺不张。"),
        [(0, (300.0, 370.0, 420.0, 400.0))],
        "indeterminate",
        0.35,
    ),
    # the second (AP, 512 x 480) image
    (
        "anatomy",
        ("right lung", "右肺"),
        ("Right lung on the AP view.", "前后位片示右肺。"),
        [(1, (70.0, 60.0, 245.0, 420.0))],
        "present",
        0.95,
    ),
    (
        "anatomy",
        ("left lung", "左肺"),
        ("Left lung on the AP view.", "前后位片示左肺。"),
        [(1, (275.0, 60.0, 455.0, 418.0))],
        "present",
        0.94,
    ),
    (
        "abnormality",
        ("cardiomegaly", "心脏增大"),
        ("Cardiomegaly is again seen on the AP view.", "前后位片再次显示心脏增大。"),
        [(1, (165.69, 243.93, 419.53, 418.03))],
        "present",
        0.83,
    ),
    (
        "abnormality",
        ("consolidation", "实变"),
        ("Possible consolidation in the right lower zone.", "右下肺野可疑实变。"),
        [(1, (90.0, 300.0, 210.0, 400.0))],
        "indeterminate",
        0.51,
    ),
    (
        "anatomy",
        ("spine", "脊柱"),
        ("Thoracic spine visible through the heart.", "心影后可见胸椎。"),
        [(1, (240.0, 20.0, 275.0, 470.0))],
        "present",
        None,
    ),
    ("abnormality", ("mass", "肿块"), ("No mass is seen.", "未见肿块。"), [], "absent", None),
    (
        "anatomy",
        ("left clavicle", "左锁骨"),
        ("The left clavicle is intact.", "左锁骨完整。"),
        [(1, (280.0, 30.0, 430.0, 75.0))],
        "present",
        0.9,
    ),
    (
        "abnormality",
        ("support device", "支持装置"),
        (
            "A central venous catheter tip projects over the superior vena cava.",
            "中心静脉导管尖端位于上腔静脉投影区。",
        ),
        [(1, (210.0, 90.0, 300.0, 215.0))],
        "present",
        0.77,
    ),
]


def make_grounded_report() -> GroundedReport:
    """The realistic 20-finding bilingual report used by the exporter tests."""
    findings = tuple(
        _finding(n, kind, label, sentence, boxes, presence=presence, confidence=confidence)
        for n, (kind, label, sentence, boxes, presence, confidence) in enumerate(_MAIN_FINDINGS)
    )
    assert len(findings) == 20
    return GroundedReport(
        study_instance_uid=STUDY_INSTANCE_UID,
        findings=findings,
        impression=Text(
            {
                "en": "Cardiomegaly with a small left pleural effusion and left mid-zone "
                "infiltrate. No pneumothorax.",
                "zh-CN": "心脏增大，伴左侧少量胸腔积液及左中肺野浸润。未见气胸。",
            }
        ),
        model=MODEL,
        task=Task.GROUNDED_REPORT,
        raw_output="<ref>right lung</ref><box>[[121, 172, 468, 839]]</box>: The right lung is "
        "well expanded. ...",
        created_at=datetime(2026, 3, 10, 10, 20, 0, tzinfo=UTC),
    )


def make_edge_case_report() -> GroundedReport:
    """Hard cases: long text, text-only, partly/entirely outside boxes, multi-image finding."""
    long_en = " ".join(
        f"Sentence {i}: there is a subtle reticular opacity in the peripheral lung "
        "with no change since the prior study."
        for i in range(60)
    )  # > 6000 characters: beyond LO/ST limits, within UT
    long_zh = "".join(f"第{i}句：周围肺野见细微网状影，与前次检查相比无变化。" for i in range(120))
    findings = (
        _finding(
            0,
            "abnormality",
            ("interstitial opacity", "间质影"),
            (long_en, long_zh),
            [(0, (300.0, 100.0, 480.0, 300.0))],
            confidence=0.6,
            report_key="edge",
        ),
        _finding(
            1,
            "abnormality",
            ("pneumothorax", "气胸"),
            ("No pneumothorax.", "未见气胸。"),
            [],
            presence="absent",
            report_key="edge",
        ),
        # partly outside both images (clipped to the image, clipping recorded)
        _finding(
            2,
            "abnormality",
            ("pleural effusion", "胸腔积液"),
            ("Right effusion extending to the image edge.", "右侧积液延伸至图像边缘。"),
            [(0, (-20.5, 400.0, 130.0, 530.0)), (1, (400.0, 420.0, 540.0, 500.0))],
            confidence=0.8,
            report_key="edge",
        ),
        # entirely outside the image (dropped, recorded): the finding keeps its text
        _finding(
            3,
            "abnormality",
            ("nodule", "结节"),
            ("Nodule reported outside the field of view.", "视野外报告的结节。"),
            [(1, (520.0, 10.0, 560.0, 40.0))],
            confidence=0.2,
            report_key="edge",
        ),
        # zero-area after clipping: touches the right edge only
        _finding(
            4,
            "anatomy",
            ("right hemidiaphragm", "右侧膈肌"),
            ("Edge-only region.", "仅边缘区域。"),
            [(0, (512.0, 100.0, 530.0, 200.0)), (0, (50.0, 380.0, 240.0, 440.0))],
            report_key="edge",
        ),
        # user-supplied concept overrides the code table; odd characters
        _finding(
            5,
            "abnormality",
            ('Ground-glass <opacity> & "haze"', "磨玻璃影「模糊」"),
            ("Ground-glass haze; 50% of the zone — see note.", "磨玻璃影：约50%区域——见备注。"),
            [(1, (100.0, 100.0, 200.0, 200.0))],
            confidence=0.55,
            concept=CodedConcept("50960005", "SCT", "Hemorrhage"),
            report_key="edge",
        ),
    )
    return GroundedReport(
        study_instance_uid=STUDY_INSTANCE_UID,
        findings=findings,
        impression=Text({"en": long_en[:3000], "zh-CN": long_zh[:1500]}),
        model=MODEL,
        task=Task.GROUNDED_REPORT,
        raw_output="(edge cases)",
        created_at=datetime(2026, 3, 10, 10, 21, 0, tzinfo=UTC),
    )


@pytest.fixture
def grounded_report() -> GroundedReport:
    """20 bilingual (en, zh-CN) findings on :func:`source_images` (2 text-only)."""
    return make_grounded_report()


@pytest.fixture
def edge_case_report() -> GroundedReport:
    """Bilingual hard cases on :func:`source_images` (see :func:`make_edge_case_report`)."""
    return make_edge_case_report()


#: A real 10-frame Enhanced MR (64 x 64) from ../shared/data/dicom (pydicom-data, MIT).
MULTIFRAME_FILE = (REPO_ROOT.parent / "shared" / "data" / "dicom" / "emri_small_RLE.dcm").resolve()


@pytest.fixture(scope="session")
def _multiframe_cache() -> Dataset:
    if not MULTIFRAME_FILE.is_file():
        pytest.fail(
            f"test image {MULTIFRAME_FILE} not found; CI puts shared/ beside the repository"
        )
    return dcmread(MULTIFRAME_FILE)


@pytest.fixture
def multiframe_source(_multiframe_cache: Dataset) -> Dataset:
    """A real 10-frame Enhanced MR image (its own study, 64 x 64, ISO_IR 100)."""
    return copy.deepcopy(_multiframe_cache)


@pytest.fixture
def multiframe_report(_multiframe_cache: Dataset) -> GroundedReport:
    """Two findings on frames 2 and 7 of :func:`multiframe_source` (one box partly outside)."""
    ds = _multiframe_cache
    ref = lambda frame: ImageRef(ds.SOPInstanceUID, ds.SOPClassUID, frame)
    findings = (
        Finding(
            FindingKind.ABNORMALITY,
            Text({"en": "lesion", "zh-CN": "病灶"}),
            Text({"en": "Lesion on frame 2.", "zh-CN": "第2帧见病灶。"}),
            (Region(ref(2), Box(10.5, 12.0, 30.0, 28.25)),),
            derive_uid("radground-test", "mf", 0),
            confidence=0.5,
        ),
        Finding(
            FindingKind.ANATOMY,
            Text({"en": "brain", "zh-CN": "脑"}),
            Text({"en": "Brain on frame 7.", "zh-CN": "第7帧脑。"}),
            (Region(ref(7), Box(4.0, 2.0, 70.0, 60.0)),),
            derive_uid("radground-test", "mf", 1),
        ),
    )
    return GroundedReport(
        study_instance_uid=ds.StudyInstanceUID,
        findings=findings,
        impression=Text({"en": "Multi-frame test.", "zh-CN": "多帧测试。"}),
        model=MODEL,
        task=Task.GROUNDED_REPORT,
        raw_output="(multi-frame)",
        created_at=datetime(2026, 3, 10, 10, 22, 0, tzinfo=UTC),
    )


# -- a radiologist's sign-off ---------------------------------------------------------

#: The radiologist who signs in the sign-off fixtures.
VERIFIER = Verifier(
    name="Jane Doe",
    organisation="RadGround Test Hospital",
    identifier="jdoe",
    identifier_system="urn:radground:RADGROUND:account",
)
VERIFIED_AT = datetime(2026, 3, 10, 11, 5, 30, tzinfo=UTC)
#: Indices in :func:`make_grounded_report` of the findings the radiologist rejects
#: (infiltrate, nodule) and edits (cardiomegaly on the PA view: both sentences, box moved).
REJECTED = (4, 9)
EDITED = 2


def make_reviewed_report(model_report: GroundedReport) -> GroundedReport:
    """``model_report`` as a radiologist reviewed it: :data:`REJECTED` removed, :data:`EDITED`
    with new sentences in both languages and a moved box, and one finding they added (a box
    they drew, no model confidence) — what the flow hands the exporters with a sign-off."""
    edited = model_report.findings[EDITED]
    changed = dataclasses.replace(
        edited,
        description=Text(
            {
                "en": "Moderate cardiomegaly (cardiothoracic ratio 0.62).",
                "zh-CN": "中度心脏增大（心胸比0.62）。",
            }
        ),
        regions=(Region(image=_ref(0), box=Box(140.0, 225.0, 410.0, 385.0)),),
    )
    added = Finding(
        kind=FindingKind.ABNORMALITY,
        label=Text({"en": "rib fracture", "zh-CN": "肋骨骨折"}),
        description=Text(
            {"en": "Old healed fracture of a left rib.", "zh-CN": "左侧肋骨陈旧性愈合骨折。"}
        ),
        regions=(Region(image=_ref(0), box=Box(380.0, 150.0, 430.0, 180.0)),),
        tracking_uid=derive_uid("radground-test", "review", "added", 1),
    )
    kept = [
        changed if n == EDITED else f
        for n, f in enumerate(model_report.findings)
        if n not in REJECTED
    ]
    return dataclasses.replace(model_report, findings=(*kept, added))


def make_sign_off(
    model_report: GroundedReport,
    reviewed: GroundedReport,
    *,
    revision: int = 1,
    number: int = 1,
    amends: bool = False,
) -> SignOff:
    """The sign-off of ``reviewed``: predecessors = the model's SR per language (set 0,
    UIDs as :func:`exporters.sr.export_sr` derives them), withdrawn = the rejected model
    findings, edited = the changed and the added finding."""
    from exporters.protocol import OutputKind
    from exporters.uids import output_uid

    predecessors = tuple(
        PredecessorDocument(
            sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
            sop_instance_uid=output_uid(
                model_report,
                revision=revision,
                kind=OutputKind.SR,
                language=language,
                role="instance",
            ),
            series_instance_uid=output_uid(
                model_report,
                revision=revision,
                kind=OutputKind.SR,
                language=language,
                role="series",
            ),
            study_instance_uid=model_report.study_instance_uid,
            language=language,
        )
        for language in model_report.languages
    )
    model_uids = {f.tracking_uid for f in model_report.findings}
    return SignOff(
        verifier=VERIFIER,
        verified_at=VERIFIED_AT,
        number=number,
        predecessors=predecessors,
        withdrawn=tuple(model_report.findings[n] for n in REJECTED),
        edited=frozenset(
            {model_report.findings[EDITED].tracking_uid}
            | {f.tracking_uid for f in reviewed.findings if f.tracking_uid not in model_uids}
        ),
        amends=amends,
    )


@pytest.fixture
def reviewed_report() -> GroundedReport:
    """:func:`make_grounded_report` as reviewed (see :func:`make_reviewed_report`)."""
    return make_reviewed_report(make_grounded_report())


@pytest.fixture
def sign_off(reviewed_report: GroundedReport) -> SignOff:
    """The first sign-off of :func:`reviewed_report` (a preliminary was not sent before)."""
    return make_sign_off(make_grounded_report(), reviewed_report)
