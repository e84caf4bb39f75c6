"""A route that holds the EHR for review, on the real PostgreSQL server, a real DICOM peer and a
real HTTP FHIR endpoint, with the real pipeline steps (messages drained by the test, as in
tests/integration/test_pipeline.py): the PACS gets the unverified SR at once, the EHR nothing;
a radiologist's sign-off sends the signed set everywhere, once.

The last assertions (VERIFIED SR in the PACS, ``final`` DiagnosticReport in the EHR) need the
exporters to honour ``ExportOptions.sign_off`` (branch h/exporters); before that branch is merged
the test stops there as an expected failure, after checking everything the pipeline controls.
"""

from __future__ import annotations

import pytest
from pydicom import dcmread
from sqlalchemy import select

from radground.settings import (
    CompletionSettings,
    DatabaseSettings,
    DicomDestination,
    FhirEndpointSettings,
    NodeSettings,
    RouteSettings,
    Settings,
    StorageSettings,
    WorkerSettings,
)
from tests.integration.test_pipeline import (  # noqa: F401 - the fixtures are used by name
    _world,
    cxr_file,
    drain,
    ehr,
    jobs,
    pacs,
)
from worklist.accounts_models import Account, Role
from worklist.db import utcnow
from worklist.jobs import reprocess_study
from worklist.jobs_models import Artifact, Delivery, DeliveryState, JobState
from worklist.review import (
    FindingChange,
    ReviewConflictError,
    decide,
    get_review,
    open_review,
    sign,
)
from worklist.review_models import FindingDecision

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture
def held_world(tmp_path, database_url, pacs, ehr):  # noqa: F811 - pytest fixtures
    settings = Settings(
        node=NodeSettings(port=0, listener_processes=1),
        storage=StorageSettings(root=tmp_path / "instances", reserve_mb=0),
        database=DatabaseSettings(url=database_url),
        completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
        workers=WorkerSettings(outputs_root=tmp_path / "outputs", requeue_after_seconds=60),
        routes=(
            RouteSettings(
                name="cxr",
                modalities=("DX", "CR"),
                body_parts=("CHEST",),
                view_positions=("PA", "AP"),
                destinations=("PACS", "EHR"),
                review="before_ehr",
            ),
        ),
        destinations={
            "PACS": DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port),
            "EHR": FhirEndpointSettings(
                url=ehr.base_url, patient_identifier_system="urn:oid:2.25.1234"
            ),
        },
    )
    yield from _world(settings, tmp_path)


def _deliveries(ctx) -> list[tuple[str, int, DeliveryState]]:
    with ctx.sessions() as session:
        return [(d.destination, d.artifact_set, d.state) for d in session.scalars(
            select(Delivery).order_by(Delivery.artifact_set, Delivery.destination))]


def _artifacts(ctx, artifact_set: int) -> list[Artifact]:
    with ctx.sessions() as session:
        return list(session.scalars(
            select(Artifact).where(Artifact.artifact_set == artifact_set).order_by(Artifact.id)))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_before_ehr_pacs_gets_the_unverified_sr_the_ehr_waits_for_the_sign_off(
    held_world, shared_data, pacs, ehr  # noqa: F811 - pytest fixtures
):
    world = held_world
    assert all(r.ok for r in world.send([cxr_file(world.tmp, shared_data)]))
    assert len(world.ready()) == 1
    drain(world.ctx, world.queue)

    # the model's set went to the PACS only; the job waits for review
    [job] = jobs(world.ctx)
    assert job.state is JobState.AWAITING_REVIEW, job.last_error
    assert _deliveries(world.ctx) == [("PACS", 0, DeliveryState.DONE)]
    assert ehr.transactions == []
    unverified = {i.sop_instance_uid for i in pacs.received}
    srs = [i for i in pacs.received if i.sop_class_uid == COMPREHENSIVE_3D_SR]
    assert len(srs) == 2  # en, zh-CN
    assert all(
        dcmread(pacs.store.root / i.relative_path).VerificationFlag == "UNVERIFIED" for i in srs
    )

    # a radiologist accepts every finding and signs
    with world.ctx.sessions.begin() as session:
        session.add(Account(name="ann", role=Role.RADIOLOGIST, full_name="Ann Smith",
                            organisation="General Hospital", created_at=utcnow()))
        view = open_review(session, job.id, account="ann")
        version = view.version
        assert view.findings, "the shipped model finds something on this radiograph"
        for finding in view.findings:
            version = decide(session, job.id, finding.tracking_uid,
                             FindingChange(decision=FindingDecision.ACCEPTED),
                             version=version, account="ann")
    assert sign(world.ctx, job.id, version=version, account="ann",
                languages=["en", "zh-CN"]) == 1
    assert world.queue.messages == [("export", job.id)]
    drain(world.ctx, world.queue)

    [job] = jobs(world.ctx)
    if job.state is JobState.FAILED and "do not honour the sign-off" in (job.last_error or ""):
        pytest.xfail("the exporters do not honour ExportOptions.sign_off yet (branch "
                     f"h/exporters): {job.last_error}")
    assert job.state is JobState.DONE, job.last_error
    assert _deliveries(world.ctx) == [
        ("PACS", 0, DeliveryState.DONE),
        ("EHR", 1, DeliveryState.DONE),
        ("PACS", 1, DeliveryState.DONE),
    ]
    signed = _artifacts(world.ctx, 1)
    assert {a.kind for a in signed} >= {"sr", "gsps", "fhir"}
    assert not {a.object_uid for a in signed} & {a.object_uid for a in _artifacts(world.ctx, 0)}
    # the PACS got the signed set's objects (new UIDs) besides the unverified ones
    signed_dicom = {a.object_uid for a in signed if a.sop_class_uid}
    assert signed_dicom <= {i.sop_instance_uid for i in pacs.received} - unverified
    # the EHR got one transaction: the signed report, once
    assert len(ehr.transactions) == 1
    assert len(ehr.resources("DiagnosticReport")) == 1

    # what the exporters write for a sign-off (h/exporters)
    assert ehr.resources("DiagnosticReport")[0]["status"] == "final"
    verified = [dcmread(pacs.store.root / i.relative_path) for i in pacs.received
                if i.sop_instance_uid in signed_dicom and i.sop_class_uid == COMPREHENSIVE_3D_SR]
    assert len(verified) == 2
    assert all(ds.VerificationFlag == "VERIFIED" for ds in verified)
    assert {ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID for ds in verified} == {
        i.sop_instance_uid for i in srs}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_study_reprocessed_during_review_supersedes_it_and_the_new_revision_waits(
    held_world, shared_data
):
    world = held_world
    source = cxr_file(world.tmp, shared_data)
    world.send([source])
    world.ready()
    drain(world.ctx, world.queue)
    [first] = jobs(world.ctx)
    assert first.state is JobState.AWAITING_REVIEW, first.last_error
    with world.ctx.sessions.begin() as session:
        view = open_review(session, first.id, account="ann")
        reprocess_study(session, str(dcmread(source).StudyInstanceUID), actor="operator:bob")
    world.ready()
    drain(world.ctx, world.queue)

    first, second = jobs(world.ctx)
    assert (first.state, second.state) == (JobState.CANCELLED, JobState.AWAITING_REVIEW)
    assert first.last_error == f"superseded by job {second.id} (study reprocessed during review)"
    with world.ctx.sessions() as session:
        old, new = get_review(session, first.id), get_review(session, second.id)
    assert (old.state, old.superseded_by_job_id) == ("superseded", second.id)
    assert (new.state, new.revision, new.version) == ("open", 2, 1)
    with world.ctx.sessions.begin() as session, pytest.raises(
        ReviewConflictError, match=f"superseded by job {second.id}: review that one"
    ):
        decide(session, first.id, view.findings[0].tracking_uid,
               FindingChange(decision=FindingDecision.ACCEPTED), version=old.version,
               account="ann")
