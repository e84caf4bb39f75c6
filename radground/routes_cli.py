"""`radground routes test`: which route a study takes, and why the others do not."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from radground.settings import Settings

if TYPE_CHECKING:  # imported where used, so that the CLI starts quickly
    from worklist.routing import InstanceFacts

__all__ = ["routes"]

EXIT_NO_ROUTE = 1


def _settings() -> Settings:
    return click.get_current_context().find_root().obj.settings


@click.group()
def routes() -> None:
    """Routing rules ([[routes]] in the config): test which one a study takes."""


@routes.command("test")
@click.argument("file_or_study")
@click.option("--calling-ae", default="", metavar="AE",
              help="Calling AE title to assume for files (a file does not say who sent it).")
def test_route(file_or_study: str, calling_ae: str) -> None:
    """Explain which route FILE_OR_STUDY would take and why each other route does not.

    FILE_OR_STUDY is a DICOM file, a directory of them (searched recursively),
    or the Study Instance UID of a study in the index. For every route, in
    order (the first match wins), it says whether the study matches and, if
    not, which condition failed with the study's value and the wanted one.
    Exits 0 when a route matches, 1 when none does.
    """
    from dicom_node.uids import is_valid_uid
    from radground.runtime import to_route
    from worklist.routing import explain_routes

    settings = _settings()
    path = Path(file_or_study)
    if path.exists():
        facts, skipped, own = _facts_from_files(path, calling_ae=calling_ae)
        source = f"{path}"
        if skipped:
            click.echo(f"{skipped} file(s) skipped: not readable DICOM", err=True)
    elif is_valid_uid(file_or_study):
        facts, own, recorded = _facts_from_index(settings, file_or_study)
        source = f"study {file_or_study}"
        if recorded:
            click.echo(f"Recorded outcome of its current revision: {recorded}")
    else:
        raise click.BadParameter(
            "neither a file or directory nor a Study Instance UID", param_hint="FILE_OR_STUDY"
        )
    own_note = f"; {own} of RadGround's own outputs (never processed)" if own else ""
    click.echo(f"{source}: {_summary(facts)}" + own_note)
    if not facts:
        click.echo("No instance that could be processed: no route applies.")
        sys.exit(EXIT_NO_ROUTE)

    verdicts = explain_routes(tuple(to_route(r) for r in settings.routes), facts)
    chosen = next((v.route for v in verdicts if v.matched), None)
    outputs = Path(settings.workers.outputs_root).absolute()
    for verdict in verdicts:
        route = verdict.route
        if verdict.matched and route is chosen:
            sent = (
                f"sent to {_destinations(settings, route.destinations)}"
                if route.destinations
                else "no destination"
            )
            click.echo(
                f"route {route.name}: MATCHES {verdict.matched} of {len(facts)} instance(s): "
                f"model {route.model}, task {route.task}; results in {outputs} ({sent})"
                + _review_note(route.review)
            )
        elif verdict.matched and chosen is not None:
            click.echo(
                f"route {route.name}: matches {verdict.matched} of {len(facts)} instance(s), "
                f"but route {chosen.name} comes first"
            )
        else:
            click.echo(f"route {route.name}: no match")
            for mismatch in verdict.mismatches:
                hint = ""
                if mismatch.condition == "calling AE title" and not calling_ae and path.exists():
                    hint = " (a file does not say who sent it: give --calling-ae)"
                click.echo(f"    {mismatch}{hint}")
    if not verdicts:
        click.echo("No routes are configured ([[routes]]): nothing is processed.")
    if chosen is None:
        click.echo("No route matches: the study is stored and indexed but not processed.")
        sys.exit(EXIT_NO_ROUTE)
    click.echo(f"The study would be processed on route {chosen.name}.")


def _review_note(policy: str) -> str:
    """What the route holds for a radiologist's sign-off (``review``), if anything."""
    if policy == "before_ehr":
        return "; review before_ehr: FHIR and HL7 destinations wait for a radiologist's sign-off"
    if policy == "before_all":
        return "; review before_all: every destination waits for a radiologist's sign-off"
    return ""


def _destinations(settings: Settings, names: tuple[str, ...]) -> str:
    """The route's destinations, each marked when it is insecure (its certificate not checked,
    a credential allowed over plain HTTP)."""
    return ", ".join(
        f"{name} (insecure = true: certificate not checked)"
        if getattr(settings.destinations.get(name), "insecure", False)
        else name
        for name in names
    )


def _summary(facts: list) -> str:
    series = {f.series_instance_uid for f in facts}
    modalities = Counter(f.modality or "(empty)" for f in facts)
    body_parts = Counter(f.body_part or "(empty)" for f in facts)
    return (
        f"{len(facts)} instance(s) in {len(series)} series; "
        f"modality {', '.join(sorted(modalities))}; "
        f"body part {', '.join(sorted(body_parts))}"
    )


def _facts_from_files(
    path: Path, *, calling_ae: str
) -> tuple[list[InstanceFacts], int, int]:  # (facts, skipped, own outputs)
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from radground.cli import _expand
    from worklist.own_outputs import looks_like_own_output
    from worklist.routing import InstanceFacts

    facts, skipped, own = [], 0, 0
    for file in _expand((path,)):
        try:
            ds = dcmread(file, stop_before_pixels=True)
            sop_class_uid = str(ds.SOPClassUID)
        except (InvalidDicomError, OSError, AttributeError, ValueError):
            skipped += 1
            continue
        if looks_like_own_output(sop_class_uid, ds):
            own += 1
            continue
        facts.append(InstanceFacts(
            sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            sop_class_uid=sop_class_uid,
            series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
            modality=str(ds.get("Modality", "") or ""),
            body_part=str(ds.get("BodyPartExamined", "") or ""),
            series_description=str(ds.get("SeriesDescription", "") or ""),
            calling_ae_title=calling_ae,
            path=str(file),
        ))
    return facts, skipped, own


def _facts_from_index(
    settings: Settings, study_instance_uid: str
) -> tuple[list[InstanceFacts], int, str | None]:  # (facts, own outputs, outcome)
    from sqlalchemy import func, select

    from radground.queries import describe_outcome
    from worklist.db import create_db_engine, make_session_factory
    from worklist.jobs_models import Job
    from worklist.migrate import upgrade_database
    from worklist.models import Instance, Series, Study, StudyRevision
    from worklist.routing import study_instance_facts

    engine = create_db_engine(settings.database.url)
    try:
        upgrade_database(engine)
        with make_session_factory(engine)() as session:
            study = session.scalar(
                select(Study).where(Study.study_instance_uid == study_instance_uid)
            )
            if study is None:
                raise click.ClickException(f"no study {study_instance_uid} in the index")
            facts = study_instance_facts(session, study.id)
            total = session.scalar(
                select(func.count(Instance.id)).join(Series).where(Series.study_pk == study.id)
            )
            revision = session.scalar(select(StudyRevision).where(
                StudyRevision.study_pk == study.id,
                StudyRevision.revision == study.current_revision,
            ))
            job = session.scalar(select(Job).where(
                Job.study_pk == study.id, Job.revision == study.current_revision
            ))
            recorded = None
            if revision is not None:
                recorded = describe_outcome(
                    revision.state,
                    revision.outcome,
                    revision.outcome_detail,
                    dispatched=revision.dispatched_at is not None,
                    job_id=job and job.id,
                    job_state=job and job.state.value,
                )
                recorded = f"revision {revision.revision}: {recorded}"
            return facts, (total or 0) - len(facts), recorded
    finally:
        engine.dispose()
