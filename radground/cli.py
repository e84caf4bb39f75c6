"""``radground``: the command line of the RadGround DICOM AI node."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from radground.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:  # imported where used, so that `radground --help` stays quick
    import socket

    from dicom_node.scu import Destination, StorageSCU

__all__ = ["main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Set by :func:`main`: the command runs in its own process, whose process tree counts its
#: metrics in one directory (``radground.metrics``). A command invoked in another program's
#: process (tests) leaves that process's metrics mode and environment alone.
_OWN_PROCESS = False


class _Context:
    def __init__(self, config: Path | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from None
        return self._settings


pass_context = click.make_pass_decorator(_Context)


def _node_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options ``serve`` and ``node`` share, and the context they run in."""
    command = pass_context(command)
    command = click.option(
        "--port",
        type=click.IntRange(0, 65535),
        default=None,
        help="DICOM port. Overrides node.port.",
    )(command)
    return click.option(
        "--listener-processes",
        type=click.IntRange(0, 64),
        default=None,
        help="Listener processes sharing the DICOM port (0 = one per CPU core). Overrides "
        "node.listener_processes.",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "-c",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="RADGROUND_CONFIG",
    help="TOML settings file (default: config/radground.toml when present). "
    "RADGROUND_* environment variables override it, e.g. RADGROUND_NODE__PORT=11113.",
)
@click.version_option(package_name="radground")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """RadGround: a DICOM AI node beside your PACS.

    It receives studies over DICOM, waits until each is complete, runs a
    region-aware model on it, and returns grounded findings as DICOM SR/GSPS
    and FHIR. Start with `radground serve`; check a peer with `radground echo`.
    """
    from dicom_node.private_files import PRIVATE_UMASK
    from radground.logs import silence_value_warnings

    os.umask(PRIVATE_UMASK)  # what any command creates is the node user's alone, whoever started it
    silence_value_warnings()
    ctx.obj = _Context(config)


@cli.command()
@_node_options
def serve(obj: _Context, listener_processes: int | None, port: int | None) -> None:
    """Run everything on this machine: the node and its workers.

    The node listens for C-ECHO and C-STORE (all storage SOP classes;
    uncompressed, deflate, RLE, JPEG, JPEG-LS and JPEG 2000 stored as
    received), indexes every instance and marks each study ready once no
    instance has arrived for completion.idle_seconds. Ready studies are routed
    (config [[routes]]) to worker processes that run the model (queue "gpu")
    and export and deliver SR, GSPS, KOS and FHIR (queue "io"). With web.enabled
    (the default) the web console, REST API and STOW-RS ingest run too, on
    web.host:web.port (loopback:8080 by default); the URL is printed at start.
    Embedded defaults: SQLite index, SQLite-file broker, the shipped CPU model.
    Stop with Ctrl-C.
    """
    _run_node(obj, listener_processes, port, with_workers=True)


@cli.command()
@_node_options
def node(obj: _Context, listener_processes: int | None, port: int | None) -> None:
    """Run the node only (cluster mode): SCP, index, completion, job dispatch.

    Workers run separately: `radground worker --queues gpu` on GPU machines,
    `radground worker --queues io` anywhere, all sharing workers.broker_url
    (Redis or RabbitMQ) and database.url (PostgreSQL).
    """
    _run_node(obj, listener_processes, port, with_workers=False)


@cli.command()
@click.option(
    "--queues",
    type=click.Choice(["gpu", "io"]),
    required=True,
    help='"gpu": run the model (one model instance per process); "io": export and deliver.',
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=None,
    help="Concurrent tasks (threads). gpu default: the largest models.*.max_batch_size, so "
    "concurrent studies share batches; io default: 4.",
)
@click.option(
    "--parent-pid",
    type=int,
    default=None,
    hidden=True,
    help="Run Celery in this process and exit when PARENT_PID is gone (the supervised child).",
)
@pass_context
def worker(obj: _Context, queues: str, concurrency: int | None, parent_pid: int | None) -> None:
    """Run a Celery worker for one queue.

    The worker runs in a child process that is started again when it dies
    (crash, OOM kill, Celery's own "Unrecoverable error"); SIGTERM or Ctrl-C
    stop it warmly: running tasks finish first.
    """
    _use_metrics_directory(obj.settings, clear=False)
    from radground.worker import run_worker, supervised_worker

    if parent_pid is not None:
        run_worker(obj.settings, queue=queues, concurrency=concurrency, parent_pid=parent_pid)
        return
    from radground.logs import configure_logging

    configure_logging(obj.settings.logging.level)
    supervised = supervised_worker(obj.settings, obj.config, queues, concurrency)
    supervised.start()
    supervised.wait_for_signal()


def _use_metrics_directory(settings: Settings, *, clear: bool) -> None:
    """Before anything that counts metrics is imported or started: this process and its
    children count them in ``<web.state_dir>/metrics`` (``clear``: the node starts afresh)."""
    if _OWN_PROCESS:
        from radground.metrics import metrics_directory, use_metrics_directory

        use_metrics_directory(metrics_directory(settings.web.state_dir), clear=clear)


def _run_node(
    obj: _Context, listener_processes: int | None, port: int | None, *, with_workers: bool
) -> None:
    settings = obj.settings
    _use_metrics_directory(settings, clear=True)
    from sqlalchemy.engine import make_url

    from dicom_node.errors import PortInUseError
    from radground.logs import configure_logging
    from radground.node import Node

    node_overrides = {}
    if listener_processes is not None:
        node_overrides["listener_processes"] = listener_processes
    if port is not None:
        node_overrides["port"] = port
    if node_overrides:
        settings = settings.model_copy(
            update={"node": settings.node.model_copy(update=node_overrides)}
        )
    configure_logging(settings.logging.level)
    node = Node(settings, process_studies=True)
    click.echo(
        f"RadGround {settings.node.ae_title} on {settings.node.host}:{settings.node.port} "
        f"({node.listener_processes} listener process(es)); storage {settings.storage.root}; "
        f"database {make_url(settings.database.url).render_as_string(hide_password=True)}",
        err=True,
    )
    if with_workers:
        click.echo(
            f"results: {Path(settings.workers.outputs_root).absolute()}/<Study "
            "Instance UID>/r<revision>/",
            err=True,
        )
    try:
        node.claim_port()  # before the workers start: a taken port stops start-up here
    except PortInUseError as exc:
        raise click.ClickException(f"cannot start the node: {exc}") from None
    web_listening = _claim_web(settings) if with_workers and settings.web.enabled else None
    workers = web = None
    if with_workers:
        from radground.worker import start_embedded_workers

        workers = start_embedded_workers(settings, obj.config)
    if web_listening is not None:
        from radground.web_app import start_web_process

        web = start_web_process(obj.config, web_listening)
    try:
        node.run_until_signal()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(
            "could not start the listener on "
            f"{settings.node.host}:{settings.node.port}: {exc.strerror} "
            "(is another node using the port? set node.port or --port)"
        ) from None
    finally:
        if web is not None:
            web.stop()
        if workers is not None:
            workers.stop()


def _claim_web(settings: Settings) -> socket.socket:
    """Claim the web port, migrate the database, print the console's URL (and how to create
    the first account when there is none); the listening socket for the web child."""
    from radground.database import database_engine
    from radground.web_app import (
        WebPortInUseError,
        accounts_hint,
        check_destinations,
        check_tls_files,
        claim_web_port,
        console_url,
    )
    from worklist.migrate import upgrade_database

    try:
        check_tls_files(settings.web)
        check_destinations(settings)
        listening = claim_web_port(settings.web)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    except WebPortInUseError as exc:
        raise click.ClickException(f"cannot start the web console: {exc}") from None
    click.echo(f"console: {console_url(settings.web, listening.getsockname())}", err=True)
    engine = database_engine(settings)
    try:
        upgrade_database(engine)  # once, here, before the node and web processes use it
        hint = accounts_hint(engine)
    finally:
        engine.dispose()
    if hint:
        click.echo(hint, err=True)
    return listening


@cli.command()
@click.option("--listen-fd", type=int, default=None, hidden=True,
              help="Serve on this inherited listening socket (the supervised child).")
@click.option("--parent-pid", type=int, default=None, hidden=True,
              help="Exit when PARENT_PID is gone (the supervised child).")
@pass_context
def web(obj: _Context, listen_fd: int | None, parent_pid: int | None) -> None:
    """Run the web surface alone (cluster mode): console, REST API, STOW-RS.

    Listens on web.host:web.port (HTTPS with web.tls_certificate and
    web.tls_key; under web.base_path behind a reverse proxy) and works on the
    node's database.url and workers.broker_url: operator actions are queued for
    the workers. The server runs in a child process that is started again when
    it dies. `radground users add NAME --role admin` creates the first account.
    """
    _use_metrics_directory(obj.settings, clear=False)
    if listen_fd is not None:
        from radground.web_app import run_web_child

        run_web_child(obj.settings, listen_fd=listen_fd, parent_pid=parent_pid)
        return
    from radground.logs import configure_logging
    from radground.web_app import start_web_process

    configure_logging(obj.settings.logging.level)
    listening = _claim_web(obj.settings)
    supervised = start_web_process(obj.config, listening)
    supervised.wait_for_signal()
    listening.close()


def _destination(obj: _Context, text: str) -> Destination:
    from dicom_node.scu import Destination
    from radground.settings import DicomDestination

    peers = {
        name: d for name, d in obj.settings.destinations.items() if isinstance(d, DicomDestination)
    }
    configured = obj.settings.destinations.get(text)
    if configured is not None and not isinstance(configured, DicomDestination):
        raise click.BadParameter(
            f"[destinations.{text}] is of type {configured.type!r}; `send` uses C-STORE "
            f'and needs a type = "dicom" destination ({", ".join(peers) or "none configured"})'
        )
    if configured is not None:
        return Destination(configured.ae_title, configured.host, configured.port)
    try:
        return Destination.parse(text)
    except ValueError as exc:
        names = ", ".join(peers) or "none configured"
        raise click.BadParameter(
            f"{exc}; or use a DICOM destination from [destinations] ({names})"
        ) from None


def _storage_scu(obj: _Context, text: str) -> StorageSCU:
    """Our Storage SCU for DESTINATION: over DICOM TLS when it names a ``[destinations.NAME]``
    with ``tls = true`` (its CA bundle, client certificate and server name)."""
    from dicom_node.scu import StorageSCU
    from radground.runtime import build_destination
    from radground.settings import DicomDestination
    from worklist.destinations.dicom_store import DicomTarget

    ae_title = obj.settings.node.ae_title
    configured = obj.settings.destinations.get(text)
    if not isinstance(configured, DicomDestination) or not configured.tls:
        return StorageSCU(ae_title)
    try:
        target = build_destination(text, configured, calling_ae_title=ae_title)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    assert isinstance(target, DicomTarget) and target.tls is not None
    return StorageSCU(ae_title, tls=target.tls.ssl_context(), server_name=target.server_name)


@cli.command()
@click.argument("destination")
@pass_context
def echo(obj: _Context, destination: str) -> None:
    """Verify a DICOM peer with C-ECHO.

    DESTINATION is a name from the [destinations] section of the config, or
    AE@host:port (e.g. ORTHANC@127.0.0.1:4242). Exits 1 if the peer does not
    answer Success.
    """
    target = _destination(obj, destination)
    result = _storage_scu(obj, destination).echo(target)
    if result.ok:
        click.echo(f"C-ECHO {target}: Success ({result.elapsed_seconds * 1000:.0f} ms)")
        return
    detail = result.reason or f"status 0x{result.status:04X}"
    click.echo(f"C-ECHO {target}: failed: {detail}", err=True)
    sys.exit(EXIT_FAILURE)


def _expand(paths: tuple[Path, ...]) -> Iterator[Path]:
    """Named files as given; directories' files recursively, without hidden ones (such as
    the node's own staging area, ``<storage root>/.incoming``, and temporary files)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            yield path


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--to", "destination", required=True, help="Name from [destinations] or AE@host:port."
)
@click.option("--quiet", "-q", is_flag=True, help="Print only failures and the summary.")
@pass_context
def send(obj: _Context, paths: tuple[Path, ...], destination: str, quiet: bool) -> None:
    """Send DICOM files (directories are searched recursively, hidden entries skipped) with C-STORE.

    Each file is sent in its own transfer syntax (never transcoded), over one
    association per batch. Prints a result per file that fails and a summary;
    exits 1 if any file was not stored.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from dicom_node.scu import SendResult

    target = _destination(obj, destination)
    files = list(_expand(paths))
    failures: list[SendResult] = []
    with Progress(
        TextColumn("[bold]C-STORE[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        disable=quiet or not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task(str(target), total=len(files))

        def on_result(result: SendResult) -> None:
            progress.advance(task)
            if not result.ok:
                failures.append(result)

        _storage_scu(obj, destination).send(files, target, on_result=on_result)
    for result in failures:
        status = f"0x{result.status:04X}" if result.status is not None else "not sent"
        reason = f": {result.reason}" if result.reason else ""
        click.echo(f"FAILED {result.source}: {status}{reason}", err=True)
    click.echo(f"{len(files) - len(failures)} of {len(files)} instances stored at {target}")
    if failures:
        sys.exit(EXIT_FAILURE)


@cli.command()
@click.option(
    "--state",
    type=click.Choice(["receiving", "ready"]),
    default=None,
    help="Only studies whose current revision is in this state.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 500),
    default=50,
    show_default=True,
    help="Most recent studies to show.",
)
@pass_context
def studies(obj: _Context, state: str | None, limit: int) -> None:
    """List received studies, most recent first: completion state and what became of them.

    Outcome: "job N <state>" (processed; `radground jobs show N`), "skipped: no
    route (<condition>)" (`radground routes test UID` explains it), "skipped: own
    output" (RadGround's results routed back), "waiting" (ready, not routed yet).
    """
    from rich.console import Console
    from rich.table import Table

    from radground.queries import list_studies

    rows = list_studies(obj.settings, state=state, limit=limit)
    table = Table(box=None, header_style="bold")
    for column in (
        "Study Instance UID",
        "Date",
        "Modality",
        "Series",
        "Instances",
        "Rev",
        "State",
        "Outcome",
        "Last received (UTC)",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.study_instance_uid,
            row.study_date or "-",
            row.modalities or "-",
            str(row.series_count),
            str(row.instance_count),
            str(row.revision),
            row.state,
            row.outcome,
            row.last_received_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    Console(width=200).print(table)
    if not rows:
        click.echo(
            "No studies yet. Send one with `radground send PATH --to RADGROUND@host:port`.",
            err=True,
        )


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@pass_context
def upgrade(obj: _Context) -> None:
    """Create or migrate the database schema to the latest version."""
    from worklist.db import create_db_engine
    from worklist.migrate import current_revision, upgrade_database

    engine = create_db_engine(obj.settings.database.url)
    upgrade_database(engine)
    click.echo(f"database at schema revision {current_revision(engine)}")


def main() -> None:
    """Console entry point."""
    global _OWN_PROCESS
    _OWN_PROCESS = True
    cli(prog_name="radground")


def _register_groups() -> None:
    from radground.jobs_cli import jobs, reprocess
    from radground.model_cli import model
    from radground.review_cli import review
    from radground.routes_cli import routes
    from radground.users_cli import users

    for command in (model, jobs, reprocess, review, routes, users):
        cli.add_command(command)


_register_groups()
