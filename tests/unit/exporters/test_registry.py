"""The exporter registry: every output kind has an exporter that declares what it writes,
and what it writes is what it declares (so loop prevention, which reads the
declarations, recognises every object RadGround sends)."""

from __future__ import annotations

import dataclasses

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from engine.report import ModelInfo
from exporters.errors import ExportError
from exporters.protocol import (
    DICOM_MEDIA_TYPE,
    Artifact,
    ExportOptions,
    OutputKind,
    UnknownOutputKindError,
    parse_output_kind,
)
from exporters.regions import plan_regions
from exporters.registry import (
    BUILD_ORDER,
    EXPORTERS,
    artifact_kinds,
    exporter_for,
    own_sop_class_uids,
)
from worklist.own_outputs import looks_like_own_output

#: The SOP classes of each DICOM output kind (PS3.4 B.5), as the standard names them.
EXPECTED_SOP_CLASSES = {
    OutputKind.SR: {"1.2.840.10008.5.1.4.1.1.88.34"},  # Comprehensive 3D SR
    OutputKind.GSPS: {
        "1.2.840.10008.5.1.4.1.1.11.1",
        "1.2.840.10008.5.1.4.1.1.11.2",
    },  # GSPS + Colour PS
    OutputKind.SC: {"1.2.840.10008.5.1.4.1.1.7"},  # Secondary Capture Image
    OutputKind.KOS: {"1.2.840.10008.5.1.4.1.1.88.59"},  # Key Object Selection Document
    OutputKind.FHIR_BUNDLE: set(),
    OutputKind.HL7_ORU: set(),
}


def test_registry_lists_every_kind_with_its_sop_classes():
    assert {
        kind: set(exporter.sop_class_uids) for kind, exporter in EXPORTERS.items()
    } == EXPECTED_SOP_CLASSES
    for kind in OutputKind:  # every member is built by some exporter, requested under one name
        exporter = exporter_for(kind)
        assert kind in exporter.produces
        assert exporter.kind is kind.requested_as
        assert (
            (exporter.media_type == DICOM_MEDIA_TYPE)
            is kind.is_dicom
            is bool(exporter.sop_class_uids)
        )
    assert own_sop_class_uids() == set().union(*EXPECTED_SOP_CLASSES.values())
    # DICOM objects are built before the outputs that point at them
    assert (
        BUILD_ORDER.index(OutputKind.SR)
        < BUILD_ORDER.index(OutputKind.KOS)
        < BUILD_ORDER.index(OutputKind.FHIR_BUNDLE)
    )


def test_a_destination_asking_for_gsps_gets_colour_presentation_states_too():
    assert artifact_kinds(["sr", "gsps"]) == {OutputKind.SR, OutputKind.GSPS, OutputKind.CSPS}
    assert artifact_kinds([OutputKind.KOS]) == {OutputKind.KOS}


def test_an_unknown_output_kind_is_named_with_the_known_ones():
    with pytest.raises(
        UnknownOutputKindError, match=r"unknown output kind 'seg'; known kinds: 'sr', 'gsps'"
    ):
        parse_output_kind("seg")
    assert parse_output_kind(" KOS ") is OutputKind.KOS
    assert isinstance(UnknownOutputKindError("x"), ExportError)


@pytest.fixture
def radground_report(grounded_report):
    """The exporters' test report, made by a model of RadGround's own (the shipped backends')."""
    model = ModelInfo.for_version(
        name=grounded_report.model.name,
        version=grounded_report.model.version,
        manufacturer="RadGround",
    )
    return dataclasses.replace(grounded_report, model=model)


@pytest.mark.parametrize("kind", list(EXPORTERS), ids=str)
def test_each_exporter_writes_only_what_it_declares_and_is_recognised_as_our_own(
    kind, radground_report, source_images
):
    exporter = EXPORTERS[kind]
    references: list[Artifact] = []
    if kind is not OutputKind.SR:  # the outputs that point at the SR get one
        options = ExportOptions(revision=1, languages=("en", "zh-CN"))
        references = EXPORTERS[OutputKind.SR].export(
            radground_report, source_images, plan_regions(radground_report, source_images), options
        )
    options = ExportOptions(revision=1, languages=("en", "zh-CN"), references=tuple(references))
    artifacts = exporter.export(
        radground_report, source_images, plan_regions(radground_report, source_images), options
    )
    assert artifacts, kind
    assert len({a.filename for a in artifacts}) == len(artifacts)
    for artifact in artifacts:
        assert artifact.kind in exporter.produces
        assert artifact.media_type == exporter.media_type
        if exporter.sop_class_uids:
            ds = dcmread(DicomBytesIO(artifact.to_bytes()))  # round trip: what goes on the wire
            assert str(ds.SOPClassUID) in exporter.sop_class_uids
            assert str(ds.SOPInstanceUID) == artifact.object_uid
            # routed back by a PACS, the node recognises it and never processes it
            assert looks_like_own_output(str(ds.SOPClassUID), ds), (kind, ds.SOPClassUID)
        else:
            assert artifact.dataset is None and artifact.to_bytes()
