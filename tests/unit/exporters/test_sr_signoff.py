"""The VERIFIED SR a radiologist's sign-off produces (issue #15, "What sign-off produces").

Built from the conftest's ``reviewed_report`` (two model findings rejected, one edited,
one added) and ``sign_off`` (Jane Doe, predecessors = the model's SRs), checked field by
field, by dciodvfy, dsrdump and PixelMed's TID 1500 validator.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from exporters.errors import ExportError
from exporters.protocol import ExportOptions, OutputKind, Verifier
from exporters.regions import plan_regions
from exporters.signoff import dicom_person_name, name_parts
from exporters.sr import SRExporter, build_sr, export_sr, series_description
from exporters.sr.document import AssembledComprehensive3DSR
from tests.exporters_validators import (
    comparable_bytes,
    dciodvfy_errors,
    dsrdump_ok,
    pixelmed_sr_errors,
)
from tests.unit.exporters.conftest import EDITED, REJECTED, VERIFIED_AT, make_grounded_report

PERSON = "121006"
DEVICE = "121007"
OBSERVER_TYPE = "121005"
PERSON_OBSERVER_NAME = "121008"


def _reread(document) -> hd.sr.Comprehensive3DSR:
    buffer = DicomBytesIO()
    document.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return hd.sr.srread(buffer)


def _write(document, path: Path) -> Path:
    document.save_as(path, enforce_file_format=True)
    return path


def _observer_types(items) -> list[str]:
    return [
        item.ConceptCodeSequence[0].CodeValue
        for item in items
        if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == OBSERVER_TYPE
    ]


def _groups(document) -> dict[str, object]:
    """Measurement groups by tracking UID (planar and text-only)."""
    content = document.content
    groups = [
        *content.get_planar_roi_measurement_groups(),
        *content.get_image_measurement_groups(),
    ]
    return {g.tracking_uid: g for g in groups}


@pytest.fixture
def signed(reviewed_report, sign_off, source_images):
    return export_sr(reviewed_report, source_images, revision=1, sign_off=sign_off).documents


# -- document level ------------------------------------------------------------------------


def test_signed_documents_are_verified_final_complete(signed, sign_off):
    assert set(signed) == {"en", "zh-CN"}
    for language, document in signed.items():
        sr = _reread(document)
        assert (sr.VerificationFlag, sr.PreliminaryFlag, sr.CompletionFlag) == (
            "VERIFIED",
            "FINAL",
            "COMPLETE",
        )
        (observer,) = sr.VerifyingObserverSequence
        assert str(observer.VerifyingObserverName) == "Doe^Jane"
        assert observer.VerifyingOrganization == "RadGround Test Hospital"
        assert observer.VerificationDateTime == "20260310110530+0000"
        (code,) = observer.VerifyingObserverIdentificationCodeSequence
        assert (code.CodeValue, code.CodingSchemeDesignator) == ("jdoe", "99RGACCOUNT")
        schemes = {i.CodingSchemeDesignator: i for i in sr.CodingSchemeIdentificationSequence}
        assert schemes["99RGACCOUNT"].CodingSchemeName == "urn:radground:RADGROUND:account"
        assert sr.SeriesDescription == f"AI findings (verified by radiologist) – {language.upper()}"
        assert sr.SeriesDescription == series_description(language, verified=True)


def test_predecessor_is_the_unverified_sr_of_the_same_language(
    signed, sign_off, grounded_report, source_images
):
    unverified = export_sr(grounded_report, source_images, revision=1).documents
    for language, document in signed.items():
        sr = _reread(document)
        (study,) = sr.PredecessorDocumentsSequence
        (series,) = study.ReferencedSeriesSequence
        (reference,) = series.ReferencedSOPSequence
        model_sr = unverified[language]
        assert study.StudyInstanceUID == model_sr.StudyInstanceUID
        assert series.SeriesInstanceUID == model_sr.SeriesInstanceUID
        assert reference.ReferencedSOPInstanceUID == model_sr.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == model_sr.SOPClassUID
        # a new document in a new series, not the model's
        assert document.SOPInstanceUID != model_sr.SOPInstanceUID
        assert document.SeriesInstanceUID != model_sr.SeriesInstanceUID
        assert model_sr.VerificationFlag == "UNVERIFIED" and "VerifyingObserverSequence" not in (
            model_sr
        )


def test_uids_are_derived_with_the_sign_off_number_and_stable(
    reviewed_report, sign_off, source_images, signed
):
    again = export_sr(reviewed_report, source_images, revision=1, sign_off=sign_off).documents
    for language in signed:
        assert comparable_bytes(signed[language]) == comparable_bytes(again[language])
    second = dataclasses.replace(sign_off, number=2)
    other = export_sr(reviewed_report, source_images, revision=1, sign_off=second).documents
    assert other["en"].SOPInstanceUID != signed["en"].SOPInstanceUID
    assert other["en"].SeriesInstanceUID != signed["en"].SeriesInstanceUID


def test_document_observer_context_keeps_the_device_and_adds_the_radiologist(signed):
    sr = _reread(signed["en"])
    assert _observer_types(sr.ContentSequence) == [PERSON, DEVICE]
    names = [
        str(item.PersonName)
        for item in sr.ContentSequence
        if item.ValueType == "PNAME"
        and item.ConceptNameCodeSequence[0].CodeValue == PERSON_OBSERVER_NAME
    ]
    assert names == ["Doe^Jane"]


def test_content_is_the_reviewed_report(signed, reviewed_report, grounded_report, sign_off):
    for language, document in signed.items():
        groups = _groups(_reread(document))
        assert set(groups) == {f.tracking_uid for f in reviewed_report.findings}
        for n in REJECTED:
            assert grounded_report.findings[n].tracking_uid not in groups
        edited = reviewed_report.findings[
            [f.tracking_uid for f in reviewed_report.findings].index(
                grounded_report.findings[EDITED].tracking_uid
            )
        ]
        comments = [
            item.TextValue
            for item in groups[edited.tracking_uid][0].ContentSequence
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "121106"
        ]
        assert comments == [edited.description[language]]


def test_edited_and_added_findings_have_the_radiologist_as_observer(
    signed, reviewed_report, sign_off
):
    groups = _groups(_reread(signed["zh-CN"]))
    for uid, group in groups.items():
        items = list(group[0].ContentSequence)
        types = _observer_types(items)
        if uid in sign_off.edited:
            assert types == [PERSON], uid
            # right after Tracking Identifier and Tracking UID
            assert items[2].ConceptNameCodeSequence[0].CodeValue == OBSERVER_TYPE
        else:
            assert types == [], uid
    assert len(sign_off.edited) == 2 and sign_off.edited <= set(groups)


def test_the_model_sets_sr_is_unchanged_without_a_sign_off(grounded_report, source_images):
    """Set 0: the same bytes as before sign-off existed (UNVERIFIED, PRELIMINARY, device only)."""
    default = export_sr(grounded_report, source_images, revision=1).documents["en"]
    explicit = export_sr(grounded_report, source_images, revision=1, sign_off=None).documents["en"]
    assert comparable_bytes(default) == comparable_bytes(explicit)
    sr = _reread(default)
    assert (sr.VerificationFlag, sr.PreliminaryFlag) == ("UNVERIFIED", "PRELIMINARY")
    assert "PredecessorDocumentsSequence" not in sr
    assert _observer_types(sr.ContentSequence) == [DEVICE]
    assert sr.SeriesDescription == "AI findings (unverified) – EN"


def test_highdicoms_constructor_gives_the_same_signed_document(
    reviewed_report, sign_off, source_images, signed
):
    reference = build_sr(
        reviewed_report,
        source_images,
        language="en",
        revision=1,
        assemble=False,
        sign_off=sign_off,
    )
    assert type(reference) is hd.sr.Comprehensive3DSR
    assert comparable_bytes(reference) == comparable_bytes(signed["en"])


def test_exporter_honours_the_sign_off(reviewed_report, sign_off, source_images, signed):
    plan = plan_regions(reviewed_report, source_images)
    artifacts = SRExporter().export(
        reviewed_report,
        source_images,
        plan,
        ExportOptions(revision=1, languages=("en", "zh-CN"), sign_off=sign_off),
    )
    assert [a.kind for a in artifacts] == [OutputKind.SR, OutputKind.SR]
    assert {a.object_uid for a in artifacts} == {d.SOPInstanceUID for d in signed.values()}
    assert all(a.dataset.VerificationFlag == "VERIFIED" for a in artifacts)


def test_verifier_without_organisation_and_with_non_ascii_name(
    reviewed_report, sign_off, source_images, tmp_path
):
    verifier = Verifier(
        name="Zoë  Müller-Lüdenscheidt",
        organisation="",
        identifier="zoe.mueller@radiology.example.org",
        identifier_system="urn:radground:RADGROUND:account",
    )
    document = build_sr(
        reviewed_report,
        source_images,
        language="en",
        revision=1,
        sign_off=dataclasses.replace(sign_off, verifier=verifier),
    )
    sr = _reread(document)
    (observer,) = sr.VerifyingObserverSequence
    assert str(observer.VerifyingObserverName) == "Müller-Lüdenscheidt^Zoë"
    assert observer.VerifyingOrganization == "Organisation not recorded"
    (code,) = observer.VerifyingObserverIdentificationCodeSequence
    assert code.LongCodeValue == "zoe.mueller@radiology.example.org"  # > 16 characters
    path = _write(document, tmp_path / "mueller.dcm")
    assert dciodvfy_errors(path) == []
    assert dsrdump_ok(path)


def test_a_document_cannot_be_its_own_predecessor(reviewed_report, sign_off, source_images):
    signed = build_sr(reviewed_report, source_images, language="en", revision=1, sign_off=sign_off)
    own = dataclasses.replace(
        sign_off.predecessors[0],
        sop_instance_uid=signed.SOPInstanceUID,
        series_instance_uid=signed.SeriesInstanceUID,
    )
    with pytest.raises(ExportError, match="own predecessor"):
        build_sr(
            reviewed_report,
            source_images,
            language="en",
            revision=1,
            sign_off=dataclasses.replace(sign_off, predecessors=(own,)),
        )


def test_assembled_document_refuses_verification_without_a_verifier(source_images):
    with pytest.raises(ValueError, match="needs a verification"):
        AssembledComprehensive3DSR(
            source_images,
            None,
            "1.2.3",
            1,
            "1.2.3.4",
            1,
            is_verified=True,  # type: ignore[arg-type]
        )


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "pn"),
    [
        ("Jane Doe", "Doe^Jane"),
        ("  Jane   Q.  Doe ", "Doe^Jane^Q."),
        ("Doe, Jane", "Doe^Jane"),
        ("Doe^Jane", "Doe^Jane"),
        ("Madonna", "Madonna"),
        ("van Dijk, Anne Marie", "van Dijk^Anne^Marie"),
    ],
)
def test_person_names_in_dicom_order(written, pn):
    assert dicom_person_name(written) == pn


def test_name_parts_refuse_an_empty_name_and_a_too_long_pn():
    with pytest.raises(ValueError, match="empty"):
        name_parts("   ")
    with pytest.raises(ValueError, match="64"):
        dicom_person_name("A" * 40 + " " + "B" * 40)
    assert name_parts("Jane Doe").given == ("Jane",)


# -- real validators ------------------------------------------------------------------------


def test_signed_documents_pass_dciodvfy_and_dsrdump_shows_verified_and_predecessor(
    signed, sign_off, tmp_path
):
    for language, document in signed.items():
        path = _write(document, tmp_path / f"signed-{language}.dcm")
        assert dciodvfy_errors(path) == [], language
        assert dsrdump_ok(path), language
        dump = subprocess.run(
            ["dsrdump", "-v", str(path)], capture_output=True, text=True, check=False
        ).stdout
        assert "Verification Flag   : VERIFIED" in dump
        assert "Doe^Jane" in dump and "RadGround Test Hospital" in dump
        assert "Predecessor Docs    : 1" in dump
        assert "Preliminary Flag    : FINAL" in dump
        (predecessor,) = [p for p in sign_off.predecessors if p.language == language]
        reread = dcmread(path)
        uid = reread.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
        assert uid.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == predecessor.sop_instance_uid


def test_bilingual_signed_document_names_both_predecessors(
    reviewed_report, sign_off, source_images, tmp_path
):
    (document,) = export_sr(
        reviewed_report, source_images, revision=1, bilingual=True, sign_off=sign_off
    ).documents.values()
    references = [
        r.ReferencedSOPInstanceUID
        for s in document.PredecessorDocumentsSequence[0].ReferencedSeriesSequence
        for r in s.ReferencedSOPSequence
    ]
    assert references == [p.sop_instance_uid for p in sign_off.predecessors]
    path = _write(document, tmp_path / "bilingual.dcm")
    assert dciodvfy_errors(path) == []
    assert dsrdump_ok(path)


@pytest.mark.slow
def test_pixelmed_sr_validator_accepts_the_signed_document(signed, tmp_path):
    path = _write(signed["en"], tmp_path / "signed-en.dcm")
    assert pixelmed_sr_errors(path) == []


def test_verification_time_is_the_sign_off_time(signed):
    sr = _reread(signed["en"])
    assert sr.VerifyingObserverSequence[0].VerificationDateTime.startswith(
        VERIFIED_AT.strftime("%Y%m%d%H%M%S")
    )
    assert make_grounded_report().created_at < VERIFIED_AT


def test_a_name_too_long_for_a_pn_is_an_export_error(reviewed_report, sign_off, source_images):
    verifier = dataclasses.replace(sign_off.verifier, name="A" * 40 + " " + "B" * 40)
    with pytest.raises(ExportError, match="64"):
        export_sr(
            reviewed_report,
            source_images,
            revision=1,
            sign_off=dataclasses.replace(sign_off, verifier=verifier),
        )


def test_every_finding_rejected_gives_a_verified_negative_sr(
    reviewed_report, sign_off, source_images, tmp_path
):
    nothing = dataclasses.replace(reviewed_report, findings=())
    documents = export_sr(nothing, source_images, revision=1, sign_off=sign_off).documents
    for language, document in documents.items():
        assert document.VerificationFlag == "VERIFIED"
        path = _write(document, tmp_path / f"negative-{language}.dcm")
        assert dciodvfy_errors(path) == []
        assert dsrdump_ok(path)


def test_pn_delimiters_inside_a_name_become_spaces():
    assert dicom_person_name("Jane O=Neil\\Smith") == "O Neil Smith^Jane"
