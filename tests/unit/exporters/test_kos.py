"""Key Object Selection Document (IHE KIN / AIR): which images, how titled, validated by real tools.

Every document is written to a file, read back and checked with dicom3tools'
``dciodvfy -new`` (no Error lines), dcmtk's ``dsrdump`` (reads the SR-like
content tree) and PixelMed's ``DicomSRValidator`` (TID 2010 template check).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread

from engine.report import Box, Finding, FindingKind, ImageRef, Presence, Region, Text, derive_uid
from exporters.errors import ExportError, SourceError
from exporters.kos import (
    SOP_CLASS_UIDS,
    DocumentTitle,
    build_key_object_selection,
    kos_uid,
    select_key_images,
)
from exporters.sr import export_sr
from tests.exporters_validators import (
    comparable_bytes,
    dciodvfy_errors,
    dciodvfy_warnings,
    dsrdump_ok,
    pixelmed_sr_errors,
)

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"

#: PixelMed reads TID 2010 rows 8-10 (IMAGE / COMPOSITE references, Concept Name
#: column empty) as "no concept name allowed"; highdicom names each reference
#: (SCT 260753009 "Source"), which PS3.3 C.17.3 permits for unnamed items. These two
#: lines, and no other, are expected.
_PIXELMED_TOLERATED = (
    "Row 8 Purpose of Reference (Concept) is forbidden for IMAGE content item",
    "Row 10 Purpose of Reference (Concept) is forbidden for COMPOSITE content item",
)


def _write_read(document, path: Path):
    document.save_as(path, enforce_file_format=True)
    return dcmread(path)


def _description(ds) -> str:
    return next(
        item.TextValue
        for item in ds.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "113012"  # Key Object Description
    )


def _positive_images(report) -> set[str]:
    return {
        region.image.sop_instance_uid
        for f in report.findings
        if f.kind is FindingKind.ABNORMALITY and f.presence is not Presence.ABSENT
        for region in f.regions
    }


def test_kos_references_exactly_the_images_with_findings(grounded_report, source_images, tmp_path):
    kos = build_key_object_selection(grounded_report, source_images, revision=1)
    ds = _write_read(kos, tmp_path / "kos.dcm")
    assert ds.SOPClassUID == KOS_CLASS and KOS_CLASS in SOP_CLASS_UIDS
    assert ds.Modality == "KO"
    referenced = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in ds.ContentSequence
        if item.ValueType == "IMAGE"
    }
    assert (
        referenced == _positive_images(grounded_report) == {s.SOPInstanceUID for s in source_images}
    )
    evidence = {
        (series.SeriesInstanceUID, sop.ReferencedSOPInstanceUID, sop.ReferencedSOPClassUID)
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert evidence == {
        (s.SeriesInstanceUID, s.SOPInstanceUID, s.SOPClassUID) for s in source_images
    }
    assert ds.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == (
        grounded_report.study_instance_uid
    )


def test_kos_title_observer_and_description(grounded_report, source_images, tmp_path):
    kos = build_key_object_selection(grounded_report, source_images, revision=1)
    ds = _write_read(kos, tmp_path / "kos.dcm")
    title = ds.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "113000",
        "DCM",
        "Of Interest",
    )
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "2010"
    assert ds.Manufacturer == "RadGround"
    assert ds.SeriesDescription == "AI key images (unverified)"
    document = hd.ko.KeyObjectSelectionDocument.from_dataset(ds)
    (observer,) = document.content.get_observer_contexts()
    attributes = observer.observer_identifying_attributes
    assert attributes.uid == grounded_report.model.device_uid
    description = _description(ds)
    assert description.startswith("AI findings (unverified)")
    assert "cardiomegaly" in description and "right lung" not in description  # anatomy: not key
    equipment = ds.ContributingEquipmentSequence[0]
    assert equipment.ManufacturerModelName == grounded_report.model.name


def test_kos_other_title_and_chinese_description(grounded_report, source_images, tmp_path):
    kos = build_key_object_selection(
        grounded_report,
        source_images,
        revision=1,
        language="zh-CN",
        document_title=DocumentTitle.FOR_PEER_REVIEW,
    )
    ds = _write_read(kos, tmp_path / "kos.dcm")
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "113008"
    description = _description(ds)
    assert "心脏增大" in description


def test_kos_ascii_only_has_no_character_set(grounded_report, source_images, tmp_path):
    for ds in source_images:
        ds.PatientName = "Zhang^Wei"
    kos = build_key_object_selection(grounded_report, source_images, revision=1, language="en")
    ds = _write_read(kos, tmp_path / "kos.dcm")
    assert "SpecificCharacterSet" not in ds


def test_kos_latin1_source_is_written_as_utf8(grounded_report, source_images_latin1, tmp_path):
    kos = build_key_object_selection(grounded_report, source_images_latin1, revision=1)
    ds = _write_read(kos, tmp_path / "kos.dcm")
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller^Zoë^Renée"
    assert dciodvfy_errors(tmp_path / "kos.dcm") == []


def test_kos_only_abnormal_images_are_key_images(grounded_report, source_images):
    # keep the findings of image 0 only: image 1 is no longer a key image
    first = source_images[0].SOPInstanceUID
    findings = tuple(
        f
        for f in grounded_report.findings
        if all(r.image.sop_instance_uid == first for r in f.regions)
    )
    report = dataclasses.replace(grounded_report, findings=findings)
    (key,) = select_key_images(report, source_images)
    assert key.sop_instance_uid == first and key.frame_numbers == ()
    assert len(select_key_images(report, source_images, include_anatomy=True)) == 1


def test_no_located_finding_gives_no_kos(grounded_report, source_images):
    negative = tuple(
        f
        for f in grounded_report.findings
        if f.kind is FindingKind.ANATOMY or f.presence is Presence.ABSENT
    )
    report = dataclasses.replace(grounded_report, findings=negative)
    assert build_key_object_selection(report, source_images, revision=1) is None
    assert (
        build_key_object_selection(
            dataclasses.replace(grounded_report, findings=()), source_images, revision=1
        )
        is None
    )
    # anatomy can be asked for explicitly
    assert (
        build_key_object_selection(report, source_images, revision=1, include_anatomy=True)
        is not None
    )


def test_region_outside_its_image_selects_nothing(edge_case_report, source_images):
    # finding 3 of the edge cases lies entirely outside image 1: it must not select it alone
    outside = edge_case_report.findings[3]
    report = dataclasses.replace(edge_case_report, findings=(outside,))
    assert build_key_object_selection(report, source_images, revision=1) is None


def test_kos_names_frames_of_multiframe_images(multiframe_report, multiframe_source, tmp_path):
    extra = Finding(
        FindingKind.ABNORMALITY,
        Text({"en": "lesion", "zh-CN": "病灶"}),
        Text({"en": "Second lesion on frame 5.", "zh-CN": "第5帧见第二处病灶。"}),
        (
            Region(
                ImageRef(multiframe_source.SOPInstanceUID, multiframe_source.SOPClassUID, 5),
                Box(1, 1, 20, 20),
            ),
        ),
        derive_uid("radground-test", "mf", 9),
    )
    report = dataclasses.replace(multiframe_report, findings=(*multiframe_report.findings, extra))
    kos = build_key_object_selection(report, [multiframe_source], revision=1)
    ds = _write_read(kos, tmp_path / "kos.dcm")
    (image,) = [i for i in ds.ContentSequence if i.ValueType == "IMAGE"]
    assert [int(v) for v in image.ReferencedSOPSequence[0].ReferencedFrameNumber] == [2, 5]
    assert dciodvfy_errors(tmp_path / "kos.dcm") == []
    assert dsrdump_ok(tmp_path / "kos.dcm")


def test_kos_references_the_sr_documents(grounded_report, source_images, tmp_path):
    srs = list(export_sr(grounded_report, source_images, revision=1).documents.values())
    kos = build_key_object_selection(
        grounded_report, source_images, revision=1, referenced_documents=srs
    )
    ds = _write_read(kos, tmp_path / "kos.dcm")
    composite = {
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for i in ds.ContentSequence
        if i.ValueType == "COMPOSITE"
    }
    assert composite == {sr.SOPInstanceUID for sr in srs}
    evidence = {
        sop.ReferencedSOPInstanceUID
        for series in ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert composite <= evidence


def test_kos_passes_dciodvfy_dsrdump_and_pixelmed(grounded_report, source_images, tmp_path):
    srs = list(export_sr(grounded_report, source_images, revision=1).documents.values())
    kos = build_key_object_selection(
        grounded_report, source_images, revision=1, referenced_documents=srs
    )
    path = tmp_path / "kos.dcm"
    kos.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    assert dciodvfy_warnings(path) == []
    assert dsrdump_ok(path)
    errors = pixelmed_sr_errors(path)
    unexpected = [e for e in errors if not any(t in e for t in _PIXELMED_TOLERATED)]
    assert unexpected == []


def test_kos_uids_are_deterministic(grounded_report, source_images):
    first = build_key_object_selection(grounded_report, source_images, revision=1)
    again = build_key_object_selection(grounded_report, source_images, revision=1)
    later = build_key_object_selection(grounded_report, source_images, revision=2)
    assert (
        first.SOPInstanceUID
        == again.SOPInstanceUID
        == kos_uid(grounded_report, revision=1, language="en", role="instance")
    )
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    assert comparable_bytes(first) == comparable_bytes(again)
    assert later.SOPInstanceUID != first.SOPInstanceUID
    assert later.SeriesInstanceUID != first.SeriesInstanceUID
    explicit = build_key_object_selection(
        grounded_report,
        source_images,
        revision=1,
        series_instance_uid="1.2.3.4",
        sop_instance_uid="1.2.3.5",
    )
    assert (explicit.SeriesInstanceUID, explicit.SOPInstanceUID) == ("1.2.3.4", "1.2.3.5")


def test_bad_arguments_raise_named_errors(grounded_report, source_images):
    with pytest.raises(ExportError, match="sop_instance_uid"):
        build_key_object_selection(
            grounded_report, source_images, revision=1, sop_instance_uid="not-a-uid"
        )
    with pytest.raises(SourceError, match="not among the source headers"):
        build_key_object_selection(grounded_report, source_images[:1], revision=1)
    other = copy.deepcopy(source_images[0])
    other.StudyInstanceUID = "1.2.3"
    with pytest.raises(SourceError, match="referenced_documents\\[0\\]"):
        build_key_object_selection(
            grounded_report,
            source_images,
            revision=1,
            referenced_documents=[_sr_like(other)],
        )


def _sr_like(ds):
    ds = ds.copy()
    del ds.Rows
    return ds
