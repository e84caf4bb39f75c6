"""DICOM SR (TID 1500, Comprehensive 3D SR) export: content, round trips and real validators."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from engine.report import (
    Box,
    CodedConcept,
    Finding,
    FindingKind,
    GroundedReport,
    ImageRef,
    ModelInfo,
    Region,
    Text,
    derive_uid,
)
from exporters import codes
from exporters.errors import ExportError, SourceError
from exporters.regions import RegionAction, plan_findings, region_tracking_uid
from exporters.sr import build_sr, export_sr, series_description
from tests.exporters_validators import (
    comparable_bytes,
    dciodvfy_errors,
    dsrdump_ok,
    pixelmed_sr_errors,
)

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def _write(sr: hd.sr.Comprehensive3DSR, path: Path | None = None) -> bytes:
    buffer = DicomBytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if path is not None:
        path.write_bytes(data)
    return data


def _reread(sr: hd.sr.Comprehensive3DSR) -> hd.sr.Comprehensive3DSR:
    buffer = DicomBytesIO(_write(sr))
    return hd.sr.srread(buffer)


def _texts(group, name: CodedConcept) -> list[str]:
    return [
        item.TextValue
        for item in group[0].ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == name.value
    ]


def _all_groups(sr: hd.sr.Comprehensive3DSR):
    return list(sr.content.get_planar_roi_measurement_groups()), list(
        sr.content.get_image_measurement_groups()
    )


# -- structure --------------------------------------------------------------


def test_one_planar_group_per_region_and_text_only_groups(grounded_report, source_images):
    result = export_sr(grounded_report, source_images, revision=1)
    assert set(result.documents) == {"en", "zh-CN"}
    n_regions = sum(len(f.regions) for f in grounded_report.findings)
    text_only = [f for f in grounded_report.findings if not f.regions]
    for language, sr in result.documents.items():
        parsed = _reread(sr)
        assert parsed.SOPClassUID == COMPREHENSIVE_3D_SR
        assert parsed.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        planar, other = _all_groups(parsed)
        assert len(planar) == n_regions
        assert [g.tracking_uid for g in other] == [f.tracking_uid for f in text_only]
        # one region per finding here: the group's tracking UID is the finding's
        with_regions = [f for f in grounded_report.findings if f.regions]
        assert [g.tracking_uid for g in planar] == [f.tracking_uid for f in with_regions]
        for group, finding in zip(planar, with_regions):
            assert _texts(group, codes.COMMENT) == [finding.description[language]]
            assert finding.label[language] in group.tracking_identifier


def test_scoord_round_trip_equals_boxes_on_exact_images(grounded_report, source_images):
    sr = build_sr(grounded_report, source_images, language="en", revision=1)
    planar, _ = _all_groups(_reread(sr))
    regions = [r for f in grounded_report.findings for r in f.regions]
    assert len(planar) == len(regions)
    for group, region in zip(planar, regions):
        roi = group.roi
        assert roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        data = roi.value
        assert data.shape == (5, 2)
        np.testing.assert_allclose(data, np.array(region.box.polyline()), rtol=0, atol=1e-4)
        assert np.array_equal(data[0], data[-1])  # closed
        ref = roi.ContentSequence[0].ReferencedSOPSequence[
            0
        ]  # SELECTED FROM: the exact source image
        assert ref.ReferencedSOPInstanceUID == region.image.sop_instance_uid
        assert ref.ReferencedSOPClassUID == region.image.sop_class_uid
        assert "ReferencedFrameNumber" not in ref


def test_multiframe_regions_reference_their_frame(multiframe_report, multiframe_source):
    result = export_sr(multiframe_report, [multiframe_source], revision=1)
    planar, _ = _all_groups(_reread(result.documents["en"]))
    assert [
        int(g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber) for g in planar
    ] == [2, 7]
    # frame 7's box is wider than the 64 x 64 image: clipped and recorded
    np.testing.assert_allclose(
        planar[1].roi.value, np.array(Box(4, 2, 64, 60).polyline()), atol=1e-4
    )
    assert [(n.finding_index, n.action) for n in result.notes] == [(1, RegionAction.CLIPPED)]


def test_findings_are_coded_with_sites_presence_and_confidence_only_when_given(
    grounded_report, source_images
):
    sr = _reread(build_sr(grounded_report, source_images, language="zh-CN", revision=1))
    planar, other = _all_groups(sr)
    groups = {g.tracking_uid: g for g in planar + other}
    for finding in grounded_report.findings:
        group = groups[finding.tracking_uid]
        coding = codes.coding_for(finding)
        assert group.finding_type.value == coding.finding_type.value
        assert group.finding_type.scheme_designator == coding.finding_type.scheme_designator
        if coding.site is not None:
            assert [s.value.value for s in group.finding_sites] == [coding.site.location.value]
        numbers = group.get_measurements(name=codes.to_hd(codes.CERTAINTY_OF_FINDING))
        if finding.confidence is None:
            assert numbers == []  # never invented
        else:
            assert float(numbers[0].value) == pytest.approx(finding.confidence * 100)
            assert numbers[0].unit.value == "%"
        (presence,) = group.get_qualitative_evaluations(name=codes.to_hd(codes.PRESENCE))
        assert presence.value == codes.to_hd(codes.PRESENCE_VALUES[finding.presence])
    # the table maps our labels: cardiomegaly is SNOMED CT 287272002 with the heart as site
    cardio = next(f for f in grounded_report.findings if f.label["en"] == "cardiomegaly")
    assert groups[cardio.tracking_uid].finding_type.value == "287272002"


def test_concept_on_the_finding_overrides_the_table(edge_case_report, source_images):
    finding = edge_case_report.findings[5]
    assert finding.concept is not None
    sr = _reread(build_sr(edge_case_report, source_images, language="en", revision=1))
    planar, _ = _all_groups(sr)
    group = next(g for g in planar if g.tracking_uid == finding.tracking_uid)
    assert group.finding_type.value == finding.concept.value


def test_document_level_attributes(grounded_report, source_images):
    sr = _reread(
        build_sr(grounded_report, source_images, language="zh-CN", revision=3, series_number=42)
    )
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.CompletionFlag == "COMPLETE"
    assert sr.PreliminaryFlag == "PRELIMINARY"
    assert sr.Modality == "SR"
    assert sr.SeriesNumber == 42
    assert sr.SeriesDescription == series_description("zh-CN") == "AI findings (unverified) – ZH-CN"
    src = source_images[0]
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
    ):
        assert sr.get(keyword) == src.get(keyword), keyword
    assert sr.PatientAge == src.PatientAge
    assert sr.SeriesInstanceUID not in {ds.SeriesInstanceUID for ds in source_images}
    # evidence: every source image, by series
    evidence = {
        (s.SeriesInstanceUID, i.ReferencedSOPInstanceUID)
        for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    assert evidence == {(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in source_images}
    # contributing equipment: the model version as processing equipment, with its device UID
    (equipment,) = [
        e
        for e in sr.ContributingEquipmentSequence
        if e.PurposeOfReferenceCodeSequence[0].CodeValue == codes.PROCESSING_EQUIPMENT.value
        and e.Manufacturer == grounded_report.model.manufacturer
    ]
    assert equipment.ManufacturerModelName == grounded_report.model.name
    assert equipment.SoftwareVersions == grounded_report.model.version
    assert equipment.DeviceUID == grounded_report.model.device_uid
    root = sr.ContentSequence
    # TID 1204 language, procedure reported = the imaging procedure (not the algorithm)
    language = next(i for i in root if i.ConceptNameCodeSequence[0].CodeValue == "121049")
    assert language.ConceptCodeSequence[0].CodeValue == "zh-CN"
    assert language.ConceptCodeSequence[0].CodingSchemeDesignator == "RFC5646"
    procedure = next(i for i in root if i.ConceptNameCodeSequence[0].CodeValue == "121058")
    assert procedure.ConceptCodeSequence[0].CodeValue == codes.IMAGING_PROCEDURE.value
    # observer context: the model version as device, with its UID
    device_uid = next(i for i in root if i.ConceptNameCodeSequence[0].CodeValue == "121012")
    assert device_uid.UID == grounded_report.model.device_uid
    # impression in TID 1500 row 12 "Qualitative Evaluations"
    (container,) = [i for i in root if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    assert container.ContentSequence[0].TextValue == grounded_report.impression["zh-CN"]
    # TID 4019 algorithm identification in every group
    planar, other = _all_groups(sr)
    for group in planar + other:
        names = {i.ConceptNameCodeSequence[0].CodeValue: i for i in group[0].ContentSequence}
        assert names["111001"].TextValue == grounded_report.model.name
        assert names["111003"].TextValue == grounded_report.model.version


# -- characters and long text -------------------------------------------------


def test_chinese_text_survives_write_read_byte_for_byte(grounded_report, source_images):
    sr = build_sr(grounded_report, source_images, language="zh-CN", revision=1)
    data = _write(sr)
    for finding in grounded_report.findings:
        assert finding.description["zh-CN"].encode("utf-8") in data
    parsed = dcmread(DicomBytesIO(data))
    texts = [
        item.TextValue
        for group in parsed.ContentSequence[-2].ContentSequence
        for item in group.ContentSequence
        if item.ValueType == "TEXT"
        and item.ConceptNameCodeSequence[0].CodeValue == codes.COMMENT.value
    ]
    assert texts == [f.description["zh-CN"] for f in grounded_report.findings]
    assert all(
        t.encode("utf-8") == f.description["zh-CN"].encode("utf-8")
        for t, f in zip(texts, grounded_report.findings)
    )


def test_latin1_source_is_rewritten_as_utf8(grounded_report, source_images_latin1, tmp_path):
    sr = build_sr(grounded_report, source_images_latin1, language="en", revision=1)
    data = _write(sr, tmp_path / "sr.dcm")
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    assert "Müller^Zoë^Renée".encode() in data
    assert "Müller".encode("latin-1") not in data
    parsed = dcmread(tmp_path / "sr.dcm")
    assert str(parsed.PatientName) == "Müller^Zoë^Renée"
    assert str(parsed.ReferringPhysicianName) == "Núñez^José"
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []


def test_long_sentences_stay_whole(edge_case_report, source_images):
    finding = edge_case_report.findings[0]
    assert len(finding.description["en"]) > 6000
    for language in ("en", "zh-CN"):
        sr = _reread(build_sr(edge_case_report, source_images, language=language, revision=1))
        planar, _ = _all_groups(sr)
        group = next(g for g in planar if g.tracking_uid == finding.tracking_uid)
        assert _texts(group, codes.COMMENT) == [finding.description[language]]


# -- bad input ------------------------------------------------------------------


def test_out_of_image_boxes_are_clipped_or_dropped_and_recorded(edge_case_report, source_images):
    result = export_sr(edge_case_report, source_images, revision=1)
    notes = {(n.finding_index, n.region_index): n for n in result.notes}
    assert notes[(2, 0)].action == RegionAction.CLIPPED and notes[(2, 0)].clipped == Box(
        0, 400, 130, 512
    )
    assert notes[(2, 1)].action == RegionAction.CLIPPED and notes[(2, 1)].clipped == Box(
        400, 420, 512, 480
    )
    assert notes[(3, 0)].action == RegionAction.DROPPED and notes[(3, 0)].clipped is None
    assert notes[(4, 0)].action == RegionAction.DROPPED
    assert set(notes) == {(2, 0), (2, 1), (3, 0), (4, 0)}
    assert all("Zhang" not in n.describe() for n in result.notes)
    findings = edge_case_report.findings
    for sr in result.documents.values():
        planar, other = _all_groups(_reread(sr))
        by_uid = {g.tracking_uid: g for g in planar}
        # two regions on two images: per-region UIDs derived from the finding's
        for k, box in enumerate([Box(0, 400, 130, 512), Box(400, 420, 512, 480)]):
            uid = region_tracking_uid(findings[2], k)
            assert (
                uid == derive_uid(findings[2].tracking_uid, "region", k) != findings[2].tracking_uid
            )
            np.testing.assert_allclose(by_uid[uid].roi.value, np.array(box.polyline()), atol=1e-4)
        # all regions dropped: the finding stays, as a text-only group with its own UID
        assert findings[3].tracking_uid in [g.tracking_uid for g in other]
        # one of two regions dropped: the other keeps its per-region UID
        assert region_tracking_uid(findings[4], 1) in by_uid
        assert region_tracking_uid(findings[4], 0) not in by_uid
        # the text-only finding (no regions at all)
        assert findings[1].tracking_uid in [g.tracking_uid for g in other]


def test_region_on_an_image_not_given_is_a_source_error(grounded_report, source_images):
    with pytest.raises(SourceError, match="not among the source headers"):
        build_sr(grounded_report, source_images[:1], language="en", revision=1)


def test_multiframe_region_without_frame_is_a_source_error(multiframe_report, multiframe_source):
    finding = multiframe_report.findings[0]
    no_frame = Region(
        ImageRef(multiframe_source.SOPInstanceUID, multiframe_source.SOPClassUID), Box(1, 1, 5, 5)
    )
    bad = GroundedReport(
        study_instance_uid=multiframe_report.study_instance_uid,
        findings=(
            Finding(
                finding.kind, finding.label, finding.description, (no_frame,), finding.tracking_uid
            ),
        ),
        impression=multiframe_report.impression,
        model=multiframe_report.model,
        task=multiframe_report.task,
        raw_output="",
        created_at=multiframe_report.created_at,
    )
    with pytest.raises(SourceError, match="must name one"):
        plan_findings(bad, [multiframe_source])


def test_sources_of_another_study_are_refused(grounded_report, multiframe_source, source_images):
    with pytest.raises(SourceError, match="another study"):
        build_sr(grounded_report, [*source_images, multiframe_source], language="en", revision=1)


def test_missing_language_is_an_export_error(grounded_report, source_images):
    with pytest.raises(ExportError, match="'de'"):
        build_sr(grounded_report, source_images, language="de", revision=1)
    with pytest.raises(ExportError, match="'de'"):
        export_sr(grounded_report, source_images, revision=1, languages=["en", "de"])


def test_languages_some_texts_lack_get_no_sr_by_default(grounded_report, source_images, caplog):
    finding = grounded_report.findings[0]
    english_only = dataclasses.replace(finding, description=Text({"en": finding.description["en"]}))
    report = dataclasses.replace(
        grounded_report, findings=(english_only, *grounded_report.findings[1:])
    )
    result = export_sr(report, source_images, revision=1)
    assert list(result.documents) == ["en"]
    assert "zh-CN is missing" in caplog.text


def test_values_highdicom_refuses_become_export_errors(grounded_report, source_images):
    long_name = ModelInfo.for_version(name="X" * 80, version="1", manufacturer="RadGround Project")
    report = dataclasses.replace(
        grounded_report, model=long_name
    )  # Manufacturer's Model Name is LO (64)
    with pytest.raises(ExportError, match="could not be built"):
        build_sr(report, source_images, language="en", revision=1)


def test_unknown_label_gets_a_generic_standard_code_not_an_invented_one():
    finding = Finding(
        FindingKind.ABNORMALITY,
        Text({"en": "bullous emphysema-ish"}),
        Text({"en": "x"}),
        (),
        derive_uid("t", 1),
    )
    coding = codes.coding_for(finding)
    assert (coding.finding_type, coding.source) == (codes.FINDING, "generic")
    anatomy = Finding(
        FindingKind.ANATOMY, Text({"en": "Right Lung"}), Text({"en": "x"}), (), derive_uid("t", 2)
    )
    assert codes.coding_for(anatomy).finding_type.value == "3341006"


def test_every_engine_vocabulary_name_is_in_the_code_table():
    vocabulary = pytest.importorskip("engine.vocabulary")
    missing = [
        e.names["en"]
        for e in vocabulary.VOCABULARY.values()
        if codes.normalize_label(e.names["en"]) not in codes.CODE_TABLE
    ]
    assert missing == []


# -- determinism -----------------------------------------------------------------


def test_same_job_gives_identical_documents_and_uids(grounded_report, source_images):
    first = export_sr(grounded_report, source_images, revision=1)
    again = export_sr(grounded_report, source_images, revision=1)
    for language in first.documents:
        assert comparable_bytes(first.documents[language]) == comparable_bytes(
            again.documents[language]
        )
    en, zh = first.documents["en"], first.documents["zh-CN"]
    assert en.SeriesInstanceUID != zh.SeriesInstanceUID and en.SOPInstanceUID != zh.SOPInstanceUID
    assert en.SeriesNumber != zh.SeriesNumber
    other = build_sr(grounded_report, source_images, language="en", revision=2)
    assert (
        other.SOPInstanceUID != en.SOPInstanceUID
        and other.SeriesInstanceUID != en.SeriesInstanceUID
    )


@pytest.mark.parametrize(
    ("report_fixture", "sources_fixture"),
    [
        ("grounded_report", "source_images"),
        ("grounded_report", "source_images_latin1"),
        ("edge_case_report", "source_images_minimal"),
        ("multiframe_report", "multiframe_source"),
    ],
)
def test_assembled_documents_equal_highdicoms_own_constructor(
    report_fixture, sources_fixture, request
):
    """The fast path (shared language-independent items, no re-parse) builds the very
    dataset highdicom's Comprehensive3DSR constructor builds from fresh items."""
    report = request.getfixturevalue(report_fixture)
    sources = request.getfixturevalue(sources_fixture)
    sources = sources if isinstance(sources, list) else [sources]
    fast = export_sr(report, sources, revision=1)
    for i, language in enumerate(report.languages):
        reference = build_sr(
            report,
            sources,
            language=language,
            revision=1,
            assemble=False,
            series_number=fast.documents[language].SeriesNumber,
        )
        assert type(reference) is hd.sr.Comprehensive3DSR
        assert comparable_bytes(fast.documents[language]) == comparable_bytes(reference), language
        # .content of the assembled document is a usable highdicom content tree
        groups = fast.documents[language].content.get_planar_roi_measurement_groups()
        assert len(groups) == sum(len(f.regions) for f in report.findings) - sum(
            n.action == RegionAction.DROPPED for n in fast.notes
        )


def test_optional_bilingual_single_document(grounded_report, source_images, tmp_path):
    result = export_sr(grounded_report, source_images, revision=1, bilingual=True)
    assert list(result.documents) == ["en"]
    sr = result.documents["en"]
    assert sr.SeriesDescription == "AI findings (unverified) – EN+ZH-CN"
    per_language = export_sr(grounded_report, source_images, revision=1).documents["en"]
    assert sr.SOPInstanceUID != per_language.SOPInstanceUID
    assert sr.SeriesInstanceUID != per_language.SeriesInstanceUID
    path = tmp_path / "bilingual.dcm"
    _write(sr, path)
    assert dciodvfy_errors(path) == []
    assert dsrdump_ok(path)
    parsed = hd.sr.srread(path)
    planar, other = _all_groups(parsed)
    by_uid = {g.tracking_uid: g for g in planar + other}
    for finding in grounded_report.findings:
        group = by_uid[finding.tracking_uid]
        comments = [
            i
            for i in group[0].ContentSequence
            if i.ValueType == "TEXT"
            and i.ConceptNameCodeSequence[0].CodeValue == codes.COMMENT.value
        ]
        assert [c.TextValue for c in comments] == [
            finding.description["en"],
            finding.description["zh-CN"],
        ]
        assert "ContentSequence" not in comments[0]  # the document's own language
        (modifier,) = comments[1].ContentSequence  # TID 1204 on the Chinese text
        assert modifier.RelationshipType == "HAS CONCEPT MOD"
        assert modifier.ConceptNameCodeSequence[0].CodeValue == "121049"
        assert modifier.ConceptCodeSequence[0].CodeValue == "zh-CN"
    (container,) = [
        i for i in parsed.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    ]
    assert [i.TextValue for i in container.ContentSequence] == [
        grounded_report.impression["en"],
        grounded_report.impression["zh-CN"],
    ]


# -- real validators ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("report_fixture", "sources_fixture"),
    [
        ("grounded_report", "source_images"),
        ("grounded_report", "source_images_latin1"),
        ("grounded_report", "source_images_minimal"),
        ("edge_case_report", "source_images"),
        ("multiframe_report", "multiframe_source"),
    ],
)
def test_every_variant_passes_dciodvfy_and_dsrdump(
    report_fixture, sources_fixture, request, tmp_path
):
    report = request.getfixturevalue(report_fixture)
    sources = request.getfixturevalue(sources_fixture)
    if not isinstance(sources, list):
        sources = [sources]
    result = export_sr(report, sources, revision=1)
    for language, sr in result.documents.items():
        path = tmp_path / f"{language}.dcm"
        _write(sr, path)
        assert dciodvfy_errors(path) == [], language
        assert dsrdump_ok(path), language
        _reread(sr)  # highdicom re-parses it


@pytest.mark.slow
def test_pixelmed_sr_validator_finds_no_errors(
    grounded_report, edge_case_report, source_images, tmp_path
):
    documents = {  # one bilingual document (both languages), one Chinese edge-case document
        "main-bilingual": export_sr(
            grounded_report, source_images, revision=1, bilingual=True
        ).documents["en"],
        "edge-zh": build_sr(edge_case_report, source_images, language="zh-CN", revision=1),
    }
    for name, sr in documents.items():
        path = tmp_path / f"{name}.dcm"
        _write(sr, path)
        assert pixelmed_sr_errors(path) == [], name


def test_negative_report_gives_a_valid_sr_saying_nothing_was_found(
    tmp_path, source_images, grounded_report
):
    """A study where the model found nothing still gets an SR per language: one
    text-only group (finding absent) with the impression, and the impression itself."""
    import dataclasses

    from engine.report import Presence, Text
    from exporters.sr import export_sr
    from tests.exporters_validators import dciodvfy_errors, dsrdump_ok

    impression = Text({"en": "No acute cardiopulmonary abnormality detected by the model.",
                       "zh-CN": "模型未发现急性心肺异常。"})
    negative = dataclasses.replace(grounded_report, findings=(), impression=impression)
    export = export_sr(negative, source_images[:1], revision=1, languages=("en", "zh-CN"))
    assert set(export.documents) == {"en", "zh-CN"}
    for language, document in export.documents.items():
        path = tmp_path / f"negative-{language}.dcm"
        document.save_as(path)
        assert dciodvfy_errors(path) == []
        assert dsrdump_ok(path)
        text = path.read_bytes()
        assert impression[language].encode("utf-8") in text
        groups = [g for g in hd_groups(document)]
        assert len(groups) == 1 and groups[0] == Presence.ABSENT


def hd_groups(document):
    """The presence value of each measurement group, read back through highdicom."""
    import highdicom as hd

    from engine.report import Presence

    report = hd.sr.Comprehensive3DSR.from_dataset(document)
    presences = []
    for item in report.ContentSequence:
        for group in getattr(item, "ContentSequence", []):
            for child in getattr(group, "ContentSequence", []):
                if child.ConceptNameCodeSequence[0].CodeMeaning == "Presence of property":
                    meaning = child.ConceptCodeSequence[0].CodeMeaning
                    presences.append(Presence.ABSENT if meaning == "Absent" else Presence.PRESENT)
    return presences


def test_algorithm_identification_says_which_findings_the_model_does_not_report(
    grounded_report, source_images
):
    """TID 4019 Algorithm Parameters carry ModelInfo.parameters (the default model's
    reported and not-reported classes), in every measurement group."""
    statements = (
        "reported findings: Cardiomegaly (score >= 0.15)",
        "not reported by this model: Effusion, Mass",
    )
    model = dataclasses.replace(grounded_report.model, parameters=statements)
    sr = _reread(
        build_sr(
            dataclasses.replace(grounded_report, model=model),
            source_images,
            language="en",
            revision=1,
        )
    )

    def algorithm_items(items):
        for item in items:
            if item.ConceptNameCodeSequence[0].CodeValue == "111001":  # Algorithm Name
                yield [
                    sibling.TextValue for sibling in items
                    # Algorithm Parameters
                    if sibling.ConceptNameCodeSequence[0].CodeValue == "111002"
                ]
            yield from algorithm_items(item.get("ContentSequence", []))

    found = list(algorithm_items(sr.ContentSequence))
    assert found and all(parameters == list(statements) for parameters in found)
    plain = _reread(build_sr(grounded_report, source_images, language="en", revision=1))
    assert all(parameters == [] for parameters in algorithm_items(plain.ContentSequence))
