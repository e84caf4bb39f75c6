"""The replacement presentation states, Key Object Selection and Secondary Captures a
radiologist's sign-off produces: new UIDs derived with the sign-off number (stable across
builds), the same source images, only the reviewed findings, texts saying "verified".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread

from exporters.kos import build_key_object_selection
from exporters.kos.exporter import KeyObjectSelectionExporter
from exporters.pr import build_presentation_states
from exporters.pr.exporter import PresentationStateExporter
from exporters.protocol import ExportOptions, OutputKind, Verifier
from exporters.regions import plan_regions
from exporters.sc import build_secondary_captures
from exporters.sr import SRExporter
from tests.exporters_validators import dciodvfy_errors
from tests.unit.exporters.conftest import REJECTED
from tests.unit.exporters.test_gsps import assert_valid

PERSON = "121006"


def _write_read(dataset, path: Path):
    dataset.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == [], path.name
    return dcmread(path)


def _tracking_uids(state) -> set[str]:
    return {
        str(item.TrackingUID)
        for annotation in state.GraphicAnnotationSequence
        for item in annotation.get("GraphicObjectSequence", [])
    }


def _referenced_images(states) -> set[str]:
    return {
        str(image.ReferencedSOPInstanceUID)
        for state in states
        for series in state.ReferencedSeriesSequence
        for image in series.ReferencedImageSequence
    }


# -- presentation states --------------------------------------------------------------------


def test_signed_presentation_states_replace_the_models(
    grounded_report, reviewed_report, sign_off, source_images, tmp_path
):
    model = build_presentation_states(grounded_report, source_images, language="en", revision=1)
    signed = build_presentation_states(
        reviewed_report, source_images, language="en", revision=1, sign_off=sign_off
    )
    assert len(signed) == len(model) == 2
    # dciodvfy and dcmpschk (the presentation-state semantics) find nothing
    read = [assert_valid(s, tmp_path / f"signed-{n}.dcm") for n, s in enumerate(signed)]
    # new objects in new series
    assert {s.SOPInstanceUID for s in signed}.isdisjoint(s.SOPInstanceUID for s in model)
    assert {s.SeriesInstanceUID for s in signed}.isdisjoint(s.SeriesInstanceUID for s in model)
    # the same images
    assert _referenced_images(read) == _referenced_images(model)
    # only the reviewed findings: rejected ones gone, the added one drawn
    drawn = set().union(*(_tracking_uids(s) for s in read))
    assert drawn == {f.tracking_uid for f in reviewed_report.findings if f.regions}
    for n in REJECTED:
        assert grounded_report.findings[n].tracking_uid not in drawn
    for state in read:
        assert state.SeriesDescription == "AI overlays (verified by radiologist) \u2013 EN"
        assert state.ContentLabel == "AI_VERIFIED"
        assert {layer.GraphicLayerDescription for layer in state.GraphicLayerSequence} <= {
            "AI-detected abnormalities (verified by radiologist)",
            "AI-located anatomy (verified by radiologist)",
        }


def test_signed_presentation_state_uids_are_stable_and_change_with_the_number(
    reviewed_report, sign_off, source_images
):
    def uids(sign_off_used):
        return [
            (s.SeriesInstanceUID, s.SOPInstanceUID)
            for s in build_presentation_states(
                reviewed_report, source_images, language="zh-CN", revision=1, sign_off=sign_off_used
            )
        ]

    first = uids(sign_off)
    assert first == uids(sign_off)
    second = uids(dataclasses.replace(sign_off, number=2))
    assert {u for pair in first for u in pair}.isdisjoint(u for pair in second for u in pair)


def test_model_presentation_states_are_unchanged(grounded_report, source_images):
    state = build_presentation_states(grounded_report, source_images, language="en", revision=1)[0]
    assert state.ContentLabel == "AI_OVERLAYS"
    assert state.SeriesDescription == "AI overlays (unverified) \u2013 EN"
    again = build_presentation_states(
        grounded_report, source_images, language="en", revision=1, sign_off=None
    )[0]
    assert again.SOPInstanceUID == state.SOPInstanceUID


def test_presentation_state_exporter_passes_the_sign_off(reviewed_report, sign_off, source_images):
    plan = plan_regions(reviewed_report, source_images)
    options = ExportOptions(revision=1, languages=("en",), sign_off=sign_off)
    artifacts = PresentationStateExporter().export(reviewed_report, source_images, plan, options)
    assert [a.kind for a in artifacts] == [OutputKind.GSPS, OutputKind.GSPS]
    assert all("verified by radiologist" in a.dataset.SeriesDescription for a in artifacts)


# -- key object selection -------------------------------------------------------------------


def test_signed_kos_references_the_signed_sr_and_says_verified(
    grounded_report, reviewed_report, sign_off, source_images, tmp_path
):
    plan = plan_regions(reviewed_report, source_images)
    options = ExportOptions(revision=1, languages=("en", "zh-CN"), sign_off=sign_off)
    srs = SRExporter().export(reviewed_report, source_images, plan, options)
    (artifact,) = KeyObjectSelectionExporter().export(
        reviewed_report, source_images, plan, dataclasses.replace(options, references=tuple(srs))
    )
    model = build_key_object_selection(grounded_report, source_images, revision=1)
    ds = _write_read(artifact.dataset, tmp_path / "kos.dcm")
    assert ds.SOPInstanceUID != model.SOPInstanceUID
    assert ds.SeriesInstanceUID != model.SeriesInstanceUID
    assert ds.SeriesDescription == "AI key images (verified by radiologist)"
    description = next(
        i.TextValue
        for i in ds.ContentSequence
        if i.ConceptNameCodeSequence[0].CodeValue == "113012"
    )
    assert description.startswith("AI findings (verified by radiologist)")
    assert "infiltrate" not in description and "nodule" not in description  # rejected
    assert "rib fracture" in description  # added by the radiologist
    composites = {
        str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for i in ds.ContentSequence
        if i.ValueType == "COMPOSITE"
    }
    assert composites == {a.object_uid for a in srs}
    document = hd.ko.KeyObjectSelectionDocument.from_dataset(ds)
    observer_types = [o.observer_type.value for o in document.content.get_observer_contexts()]
    assert PERSON in observer_types and "121007" in observer_types
    again = build_key_object_selection(
        reviewed_report, source_images, revision=1, sign_off=sign_off
    )
    assert again.SOPInstanceUID == ds.SOPInstanceUID


def test_signed_kos_with_a_non_ascii_verifier_uses_utf8(
    reviewed_report, sign_off, source_images, tmp_path
):
    verifier = Verifier("Zoë Müller", "Klinikum Süd", "zmueller", "urn:radground:X:account")
    kos = build_key_object_selection(
        reviewed_report,
        source_images,
        revision=1,
        language="en",
        sign_off=dataclasses.replace(sign_off, verifier=verifier),
    )
    ds = _write_read(kos, tmp_path / "kos-utf8.dcm")
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    names = [str(i.PersonName) for i in ds.ContentSequence if i.ValueType == "PNAME"]
    assert names == ["Müller^Zoë"]


# -- secondary capture ----------------------------------------------------------------------


def test_signed_secondary_captures_are_new_and_say_verified(
    grounded_report, reviewed_report, sign_off, source_images, tmp_path
):
    model = build_secondary_captures(grounded_report, source_images, language="en", revision=1)
    signed = build_secondary_captures(
        reviewed_report, source_images, language="en", revision=1, sign_off=sign_off
    )
    assert {i.SOPInstanceUID for i in signed}.isdisjoint(i.SOPInstanceUID for i in model)
    read = _write_read(signed[0], tmp_path / "sc.dcm")
    assert read.SeriesDescription == "AI burned-in findings (verified by radiologist) \u2013 EN"
    assert "verified by a radiologist" in read.DerivationDescription
    # the burned-in caption differs from the model's (other pixels at the caption)
    assert not np.array_equal(signed[0].pixel_array, model[0].pixel_array)


@pytest.mark.parametrize("number", [1, 3])
def test_signed_uids_never_collide_with_the_model_set(
    reviewed_report, sign_off, source_images, number
):
    signed_sign_off = dataclasses.replace(sign_off, number=number)
    model_uids = {
        s.SOPInstanceUID
        for s in build_presentation_states(
            reviewed_report, source_images, language="en", revision=1
        )
    }
    signed_uids = {
        s.SOPInstanceUID
        for s in build_presentation_states(
            reviewed_report, source_images, language="en", revision=1, sign_off=signed_sign_off
        )
    }
    assert model_uids.isdisjoint(signed_uids)
