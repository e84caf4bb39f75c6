"""Radiologists' decisions as data: `radground review export` and `radground review figures`.

An export is written to the audit trails as ``cli:<operating system user>``: an IHE ATNA
Export event naming the exported studies (``[audit]``) and a ``review-exported`` entry in the
node's own audit trail (``radground jobs show`` lists a job's entries).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import click

from radground.settings import Settings
from radground.users_cli import cli_actor

if TYPE_CHECKING:  # imported where used, so that the CLI starts quickly
    from sqlalchemy.orm import Session

    from worklist.review.dataset import ExportSummary
    from worklist.review.figures import ClassFigures

__all__ = ["review"]


def _settings() -> Settings:
    return click.get_current_context().find_root().obj.settings


class _When(click.ParamType):
    """A day (``2026-12-01``, UTC) or an ISO 8601 time (``2026-12-01T08:00``, UTC unless it
    names its offset)."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (date, datetime)):
            return value
        text = str(value).strip()
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is neither a day (YYYY-MM-DD) nor an ISO 8601 time", param, ctx)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


WHEN = _When()


def _start(value: date | datetime) -> datetime:
    """A day starts at its midnight (UTC)."""
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time(0), tzinfo=UTC)


def _end(value: date | datetime | None) -> datetime:
    """A day ends at the next midnight (UTC): ``--until 2026-12-06`` includes that day;
    nothing given is now."""
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, datetime):
        return value
    return datetime.combine(value + timedelta(days=1), time(0), tzinfo=UTC)


@contextmanager
def _session(*, audited: bool = False) -> Iterator[Session]:
    """A transaction on the node's database (migrated first), and with ``audited`` this
    process's ATNA audit trail; the review data errors become a message and exit code 1."""
    from radground.audit import start_audit_trail, stop_audit_trail
    from radground.database import database_engine
    from worklist.db import make_session_factory
    from worklist.migrate import upgrade_database
    from worklist.review.errors import ReviewDataError

    settings = _settings()
    engine = database_engine(settings)
    if audited:
        start_audit_trail(settings)
    try:
        upgrade_database(engine)
        with make_session_factory(engine).begin() as session:
            yield session
    except ReviewDataError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
        if audited:
            stop_audit_trail(timeout=2.0)


@click.group()
def review() -> None:
    """Radiologists' reviews as data: export the decisions, show per-class figures.

    Only signed reviews count, in the period in which they were signed. Days
    are UTC: --since 2026-12-01 --until 2026-12-06 covers 1 to 6 December,
    both included.
    """


@review.command()
@click.option("--since", required=True, type=WHEN,
              help="First day (or ISO time) of the period: reviews signed from then on.")
@click.option("--until", type=WHEN, default=None,
              help="Last day of the period, included (an ISO time: excluded). Default: now.")
@click.option("--with-pixels", is_flag=True,
              help="Also write de-identified PNG copies of the images (images/), rendered with "
              "each image's default window; needed to train on the folder.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
def export(since: date | datetime, until: date | datetime | None, with_pixels: bool,
           quiet: bool, out: Path) -> None:
    """Write the reviewed findings of a period to the new or empty folder OUT.

    OUT holds boxes.csv (the final boxes of accepted findings of the default
    model's classes, in the images' pixels), decisions.jsonl (every reviewed
    finding: image UIDs and frame, the model's label, box and score, the final
    label and box, the decision and reject reason, edited languages, box IoU,
    reviewer pseudonym and time), manifest.json and README.md describing the
    format and the counts, and with --with-pixels images/<hash>.png.
    `python -m engine.default_model.train --data OUT` and `python -m
    engine.default_model.evaluate --data OUT` read it as it is.

    Patients are pseudonymous integers and reviewers reviewer-N, but
    decisions.jsonl keeps the real UIDs (to find the images in the PACS
    again) and text burned into the pixels is not detected: read OUT/README.md
    before the folder leaves the site. The export is audited (ATNA Export).
    Exits 1 when OUT is not empty or no review was signed in the period.
    """
    from worklist.review.dataset import export_reviews
    from worklist.review.errors import NoSignedReviewsError, ReviewDataError

    start, end = _start(since), _end(until)
    settings = _settings()
    actor = cli_actor()
    failure: OSError | None = None
    with _session(audited=True) as session, _Progress(disabled=quiet) as progress:
        try:
            summary = export_reviews(
                session, out, since=start, until=end, storage_root=Path(settings.storage.root),
                with_pixels=with_pixels, progress=progress,
            )
        except NoSignedReviewsError as exc:
            raise click.ClickException(
                f"{exc}; nothing written (`radground review figures --since DAY` shows what "
                "was signed when)"
            ) from None
        except ReviewDataError:
            raise  # refused before anything was written (a folder that is not empty)
        except OSError as exc:  # the folder could not be written: part of the data may be out
            _audit_export(session, actor, out, None, succeeded=False)
            failure = exc
        else:
            _audit_export(session, actor, out, summary, succeeded=True)
    if failure is not None:
        raise click.ClickException(f"export to {out} failed: {failure}")
    _report(summary, out, with_pixels=with_pixels)


def _audit_export(session: Session, actor: str, out: Path, summary: ExportSummary | None, *,
                  succeeded: bool) -> None:
    """The ATNA Export event and the node's own ``review-exported`` entry (counts only)."""
    from worklist.atna.hooks import data_exported
    from worklist.context import audit

    destination = out.resolve().as_uri()
    studies = summary.study_instance_uids if summary is not None else ()
    data_exported(session, exporter=actor, destination=destination, study_instance_uids=studies,
                  succeeded=succeeded)
    if summary is None:
        audit(session, actor, "review-exported", None, f"failed: {destination}")
        return
    audit(session, actor, "review-exported", None,
          f"{summary.reviews} reviews, {summary.findings} findings, {summary.boxes} boxes, "
          f"{summary.images_written} images to {destination}")


def _report(summary: ExportSummary, out: Path, *, with_pixels: bool) -> None:
    click.echo(
        f"{summary.reviews} signed reviews, {summary.findings} findings "
        f"({summary.accepted} accepted, {summary.rejected} rejected) written to {out}"
    )
    click.echo(
        f"boxes.csv: {summary.boxes} boxes on {summary.images} images of {summary.patients} "
        f"patients; {summary.outside_classes} accepted findings of other classes only in "
        "decisions.jsonl"
    )
    if with_pixels:
        click.echo(f"images/: {summary.images_written} PNGs")
        for name, reason in summary.images_left_out:
            click.echo(f"left out {name} (its boxes too): {reason}", err=True)
    elif summary.images_left_out:
        click.echo(f"{len(summary.images_left_out)} images not found in the storage: listed in "
                   "boxes.csv with unclipped boxes (see manifest.json)", err=True)
    click.echo(f"Read {out / 'README.md'} before the folder leaves the site.")


class _Progress:
    """The export's progress bar (rich, as `radground send`'s), on a terminal only."""

    def __init__(self, *, disabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]export[/bold] reviews"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), transient=True, disable=disabled or not sys.stderr.isatty(),
        )
        self._task: Any = None

    def __enter__(self) -> Self:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def started(self, reviews: int) -> None:
        self._task = self._bar.add_task("reviews", total=reviews)

    def review_written(self) -> None:
        if self._task is not None:
            self._bar.advance(self._task)


@review.command()
@click.option("--since", required=True, type=WHEN,
              help="First day (or ISO time) of the period.")
@click.option("--until", type=WHEN, default=None,
              help="Last day of the period, included (an ISO time: excluded). Default: now.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def figures(since: date | datetime, until: date | datetime | None, as_json: bool) -> None:
    """Per-class figures of the reviews signed in a period.

    For each class the model reported: findings reviewed, accepted, rejected
    (with the reasons: wrong place, not present, duplicate, other), the
    acceptance rate, sentences edited, boxes moved, classes changed, the mean
    IoU of the model's and the final box of accepted findings (1 = not moved),
    and the findings of that class the radiologists added (the model missed
    them); then all classes together.
    """
    from worklist.review.figures import class_figures, total_figures

    start, end = _start(since), _end(until)
    with _session() as session:
        rows = class_figures(session, start, end)
    total = total_figures(rows)
    if as_json:
        click.echo(json.dumps({
            "since": start.isoformat(), "until": end.isoformat(),
            "classes": [row.as_dict() for row in rows], "total": total.as_dict(),
        }, indent=2, ensure_ascii=False))
        return
    _print_table([*rows, total])
    if not rows:
        click.echo(f"No review was signed between {start:%Y-%m-%d %H:%M} and "
                   f"{end:%Y-%m-%d %H:%M} UTC.", err=True)


def _print_table(rows: list[ClassFigures]) -> None:
    from rich.console import Console
    from rich.table import Table

    from worklist.review_models import RejectReason

    def rate(row: ClassFigures) -> str:
        return "-" if row.acceptance_rate is None else f"{100 * row.acceptance_rate:.0f} %"

    table = Table(box=None, header_style="bold")
    for column in ("Class", "Reviewed", "Accepted", "Rejected", "Rate",
                   *(f"Rej. {reason.value.replace('_', ' ')}" for reason in RejectReason),
                   "Edited", "Moved", "Relabelled", "Mean IoU", "Added"):
        table.add_column(column, justify="left" if column == "Class" else "right")
    for row in rows:
        table.add_row(
            row.finding_class or "-", str(row.reviewed), str(row.accepted), str(row.rejected),
            rate(row), *(str(row.rejected_by_reason[reason.value]) for reason in RejectReason),
            str(row.edited), str(row.moved), str(row.relabelled),
            "-" if row.mean_iou is None else f"{row.mean_iou:.2f}", str(row.added),
        )
    Console(width=200).print(table)
