"""The ORU^R01 a radiologist's sign-off produces: result status F (or C when it corrects a
preliminary result already sent), the radiologist in OBR-32, a message of its own."""

from __future__ import annotations

import dataclasses

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from exporters.hl7 import build_oru_r01, message_control_id
from exporters.hl7.exporter import HL7Exporter, HL7Options
from exporters.protocol import ExportOptions, Verifier
from exporters.regions import plan_regions
from tests.unit.exporters.conftest import REJECTED


def _parse(er7: str):
    message = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert message.validate()
    return message


def _order(message):
    return message.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION


def _statuses(message) -> set[str]:
    return {o.obx.obx_11.to_er7() for o in _order(message).ORU_R01_OBSERVATION}


def _build(report, sources, sign_off=None):
    control_id = message_control_id(report, revision=1, signoff=sign_off.number if sign_off else 0)
    return build_oru_r01(report, sources, control_id=control_id, sign_off=sign_off)


@pytest.mark.parametrize(("amends", "status"), [(False, "F"), (True, "C")])
def test_result_status_final_or_corrected(reviewed_report, sign_off, source_images, amends, status):
    oru = _build(reviewed_report, source_images, dataclasses.replace(sign_off, amends=amends))
    message = _parse(oru.er7)
    obr = _order(message).obr
    assert obr.obr_25.to_er7() == status
    assert _statuses(message) == {status}
    assert obr.obr_22.to_er7() == "20260310110530+0000"
    assert message.msh.msh_7.to_er7() == "20260310110530+0000"


def test_principal_result_interpreter_is_the_radiologist(reviewed_report, sign_off, source_images):
    obr = _order(_parse(_build(reviewed_report, source_images, sign_off).er7)).obr
    assert obr.obr_32.to_er7() == (
        "jdoe&Doe&Jane&&&&&&&urn:radground:RADGROUND:account&URI^20260310110530+0000"
    )


def test_interpreter_with_delimiters_and_middle_names(reviewed_report, sign_off, source_images):
    verifier = Verifier("Anne-Marie Q. O&Neil", "", "amo", "urn:radground:X:account")
    oru = _build(reviewed_report, source_images, dataclasses.replace(sign_off, verifier=verifier))
    obr = _order(_parse(oru.er7)).obr
    assert obr.obr_32.to_er7().startswith("amo&O\\T\\Neil&Anne-Marie&Q.&")


def test_only_the_reviewed_findings_are_sent(
    grounded_report, reviewed_report, sign_off, source_images
):
    er7 = _build(reviewed_report, source_images, sign_off).er7
    for n in REJECTED:
        assert grounded_report.findings[n].description["en"] not in er7
    assert "Moderate cardiomegaly (cardiothoracic ratio 0.62)." in er7
    assert "Old healed fracture of a left rib." in er7


def test_the_preliminary_message_is_unchanged(grounded_report, source_images):
    message = _parse(_build(grounded_report, source_images).er7)
    obr = _order(message).obr
    assert obr.obr_25.to_er7() == "P" and _statuses(message) == {"P"}
    assert obr.obr_32.to_er7() == ""
    assert message_control_id(grounded_report, revision=1) == message_control_id(
        grounded_report, revision=1, signoff=0
    )


def test_exporter_sends_a_message_of_its_own(reviewed_report, sign_off, source_images):
    plan = plan_regions(reviewed_report, source_images)
    options = HL7Options(revision=1, languages=("en",), destination="ris")
    (preliminary,) = HL7Exporter().export(reviewed_report, source_images, plan, options)
    (final,) = HL7Exporter().export(
        reviewed_report, source_images, plan, dataclasses.replace(options, sign_off=sign_off)
    )
    assert (preliminary.filename, final.filename) == ("hl7-ris.hl7", "hl7-ris-signoff1.hl7")
    assert preliminary.object_uid != final.object_uid  # MSH-10: the receiver must not dedupe it
    assert final.object_uid == message_control_id(
        reviewed_report, revision=1, part="ris", signoff=1
    )
    assert _order(_parse(final.content.decode())).obr.obr_25.to_er7() == "F"
    # plain ExportOptions work too
    (plain,) = HL7Exporter().export(
        reviewed_report,
        source_images,
        plan,
        ExportOptions(revision=1, languages=("en",), sign_off=sign_off),
    )
    assert plain.filename == "hl7-signoff1.hl7"
