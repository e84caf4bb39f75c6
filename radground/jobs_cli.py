"""Operator commands: `radground jobs …` and `radground reprocess`."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from sqlalchemy.orm import Session, sessionmaker

from radground.settings import Settings

if TYPE_CHECKING:  # imported where used, so that the CLI starts quickly
    from worklist.views import DeliveryView

__all__ = ["jobs", "reprocess"]


def _sessions(settings: Settings) -> sessionmaker[Session]:
    from worklist.db import create_db_engine, make_session_factory
    from worklist.migrate import upgrade_database

    engine = create_db_engine(settings.database.url)
    upgrade_database(engine)
    return make_session_factory(engine)


def _settings() -> Settings:
    return click.get_current_context().find_root().obj.settings


@click.group(invoke_without_command=True)
@click.option(
    "--state",
    type=click.Choice(
        ["queued", "inferring", "exporting", "delivering", "done", "failed", "dead", "cancelled"]
    ),
    default=None,
    help="Only jobs in this state.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 500),
    default=50,
    show_default=True,
    help="Most recent jobs to show.",
)
@click.pass_context
def jobs(ctx: click.Context, state: str | None, limit: int) -> None:
    """List processing jobs, most recent first (`jobs show ID`, `jobs retry ID`)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from worklist.jobs_models import JobState
    from worklist.views import JobFilter, list_jobs

    with _sessions(_settings())() as session:
        page = list_jobs(
            session, JobFilter(states=(JobState(state),) if state else ()), limit=limit
        )
    table = Table(box=None, header_style="bold")
    for column in (
        "Job",
        "Study Instance UID",
        "Rev",
        "Route",
        "State",
        "Updated (UTC)",
        "Next retry (UTC)",
        "Last error",
    ):
        table.add_column(column)
    for job in page.items:
        retry = job.next_attempt_at
        table.add_row(
            str(job.id),
            job.study_instance_uid,
            str(job.revision),
            job.route,
            job.state.value,
            job.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            retry.strftime("%H:%M:%S") if retry else "",
            (job.last_error or "")[:60],
        )
    Console(width=200).print(table)
    if not page.items:
        click.echo("No jobs.", err=True)
        return
    outputs = Path(_settings().workers.outputs_root).absolute()
    click.echo(
        f"Outputs of each job are in {outputs}/<Study Instance UID>/r<Rev>/ "
        "(`radground jobs show JOB`)."
    )


@jobs.command()
@click.argument("job_id", type=int)
def show(job_id: int) -> None:
    """Show one job: timings, error, artifacts, deliveries and its audit trail."""
    from worklist.views import get_job

    with _sessions(_settings())() as session:
        detail = get_job(session, job_id)
    if detail is None:
        raise click.ClickException(f"no job {job_id}")
    job, timings = detail.summary, detail.timings
    click.echo(f"Job {job.id}: {job.state.value}")
    click.echo(
        f"  study {job.study_instance_uid} revision {job.revision}, route {job.route}, "
        f"model {job.model}"
    )
    click.echo(
        f"  created {timings.created_at:%Y-%m-%d %H:%M:%S}, inference started "
        f"{detail.inference_starts}x, operator retries {detail.retries}"
    )
    if timings.inference_seconds is not None:
        click.echo(
            f"  inference {timings.inference_seconds:.2f} s, "
            f"export {timings.export_seconds or 0:.2f} s"
        )
    if job.last_error:
        click.echo(f"  last error: {job.last_error}")
    outputs = Path(_settings().workers.outputs_root).absolute()
    for line in detail.output_errors:
        click.echo(f"  not built: {line}")
    for artifact in detail.artifacts:
        signed = f" (sign-off {artifact.artifact_set})" if artifact.artifact_set else ""
        click.echo(
            f"  artifact {artifact.kind:5} {artifact.language:6} {outputs / artifact.path}{signed}"
        )
    for delivery in detail.deliveries:
        _show_delivery(delivery)
    for event in detail.audit:
        click.echo(f"  {event.at:%H:%M:%S} {event.actor:32} {event.action} {event.detail}")


#: What a destination type's kept peer document is.
_PEER_DOCUMENT = {"fhir": "OperationOutcome", "hl7": "ACK"}


def _show_delivery(delivery: DeliveryView) -> None:
    """A delivery's state, attempts, the peer's last answer and, while it is being retried,
    when the next attempt is due and until when it is retried."""
    signed = f", sign-off {delivery.artifact_set}" if delivery.artifact_set else ""
    line = (f"  delivery to {delivery.destination} ({delivery.protocol}{signed}): "
            f"{delivery.state.value}, {delivery.attempts} attempts")
    click.echo(line + (f"; {delivery.last_error}" if delivery.last_error else ""))
    if delivery.state.value == "pending" and delivery.next_attempt_at is not None:
        until = (
            f", retried until {delivery.retry_until:%Y-%m-%d %H:%M:%S} UTC"
            if delivery.retry_until
            else ""
        )
        click.echo(f"    next attempt at {delivery.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC{until}")
    if delivery.state.value == "pending" and delivery.remaining_objects:
        click.echo(
            f"    {delivery.remaining_objects} objects left to send (the others were stored)"
        )
    if delivery.operation_outcome:
        label = _PEER_DOCUMENT.get(delivery.protocol, "peer answer")
        click.echo(f"    {label}: {delivery.operation_outcome[:2000]}")


@jobs.command()
@click.argument("job_id", type=int)
def retry(job_id: int) -> None:
    """Retry a failed or dead job from where it stopped (failed deliveries only, if it got that
    far)."""
    from radground.runtime import configure_celery
    from worklist import tasks
    from worklist.errors import JobActionError
    from worklist.jobs import retry_job

    settings = _settings()
    configure_celery(settings)
    actor = f"operator:{getpass.getuser()}"
    try:
        message = retry_job(tasks.context(), job_id, actor=actor)
    except JobActionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(message)


@jobs.command()
@click.argument("job_id", type=int)
def cancel(job_id: int) -> None:
    """Cancel a queued job (`jobs retry` queues it again)."""
    from worklist.errors import JobActionError
    from worklist.jobs import cancel_job

    with _sessions(_settings()).begin() as session:
        try:
            message = cancel_job(session, job_id, actor=f"operator:{getpass.getuser()}")
        except JobActionError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(message)


@click.command()
@click.argument("study_instance_uid")
def reprocess(study_instance_uid: str) -> None:
    """Process a study again as a new revision (new output UIDs that supersede the previous
    ones)."""
    from worklist.errors import JobActionError
    from worklist.jobs import reprocess_study

    with _sessions(_settings()).begin() as session:
        try:
            revision = reprocess_study(
                session, study_instance_uid, actor=f"operator:{getpass.getuser()}"
            )
        except JobActionError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(
        f"study revision {revision} opened; it is processed as soon as the running node sees it"
    )
