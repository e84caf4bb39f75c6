"""Delivery benchmark: RadGround's Storage SCU against dcmtk's storescu and a plain pynetdicom SCU,
into Orthanc.

What the io worker does for every study: open one association to the PACS and
C-STORE a few small objects (an SR and GSPS per language). The PACS is a real
Orthanc (Debian's package, loopback, started by the test harness); each sender
sends the same batches of small CT instances (64 x 64, ~10 KB, like an SR or
GSPS), one association per batch, alternating senders batch by batch so that
all see the same load:

* RadGround: :class:`dicom_node.scu.StorageSCU` (``TCP_NODELAY``, quick ACKs);
* plain pynetdicom: ``AE.associate`` + ``send_c_store`` as its documentation shows;
* dcmtk ``storescu`` as Debian ships it (one process per batch).

Prints milliseconds per batch (median, p95) and per instance, instances/s and
the ratios.

STOW-RS rows (``--protocol stow``): the same batches POSTed to an Orthanc with
Debian's DICOMweb plugin, one request per batch, alternating senders:

* RadGround: :func:`worklist.destinations.dicomweb.store_instances` (files
  streamed from disk, one reused keep-alive client);
* ``dicomweb-client``: ``DICOMwebClient.store_instances`` (its own session,
  reused) with the files read by pydicom, as its documentation shows.

Usage::

    .venv/bin/python bench/delivery.py [--protocol cstore|stow|both] [--batches 30] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from dicom_node.scu import Destination, StorageSCU
from tests.factories import write_series
from tests.integration.dicomweb import dicomweb_base, orthanc_dicomweb
from tests.integration.orthanc import OrthancPACS
from worklist.destinations import dicomweb

_config.LOG_HANDLER_LEVEL = "none"


def send_radground(files: list[Path], destination: Destination) -> None:
    results = StorageSCU("RADGROUND").send(files, destination)
    if not all(r.ok for r in results):
        raise RuntimeError(f"RadGround SCU: {[r.reason for r in results if not r.ok]}")


def send_pynetdicom(files: list[Path], destination: Destination) -> None:
    datasets = [dcmread(f) for f in files]
    ae = AE("PLAINSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise RuntimeError("plain pynetdicom: association failed")
    try:
        for dataset in datasets:
            status = assoc.send_c_store(dataset)
            if not status or status.Status != 0:
                raise RuntimeError(f"plain pynetdicom: C-STORE status {status}")
    finally:
        assoc.release()


def send_storescu(files: list[Path], destination: Destination) -> None:
    subprocess.run(
        [
            "storescu",
            "-aet",
            "STORESCU",
            "-aec",
            destination.ae_title,
            destination.host,
            str(destination.port),
            *map(str, files),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


SENDERS: dict[str, Callable[[list[Path], Destination], None]] = {
    "RadGround StorageSCU": send_radground,
    "plain pynetdicom SCU": send_pynetdicom,
    "dcmtk storescu": send_storescu,
}


class StowSenders:
    """The two STOW-RS senders, each with one HTTP session reused across batches."""

    def __init__(self, base: str) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.base = base
        self.client = dicomweb.make_client()
        self.dicomweb_client = DICOMwebClient(url=base)

    def radground(self, files: list[Path]) -> None:
        result = dicomweb.store_instances(self.base, files, client=self.client)
        if not result.complete:
            raise RuntimeError(f"RadGround STOW-RS: {result.peer_answer}")

    def dicomweb_client_(self, files: list[Path]) -> None:
        answer = self.dicomweb_client.store_instances([dcmread(f) for f in files])
        if len(answer.get("ReferencedSOPSequence", [])) != len(files):
            raise RuntimeError(f"dicomweb-client STOW-RS: {answer}")

    def close(self) -> None:
        self.client.close()


def bench_stow(args: argparse.Namespace, console: Console, work: Path) -> None:
    with orthanc_dicomweb(work / "orthanc-dicomweb") as pacs:
        senders = StowSenders(dicomweb_base(pacs))
        send: dict[str, Callable[[list[Path]], None]] = {
            "RadGround STOW-RS": senders.radground,
            "dicomweb-client": senders.dicomweb_client_,
        }
        timings: dict[str, list[float]] = {name: [] for name in send}
        try:
            # warm-up: imports, connections, Orthanc's first writes
            for index, name in enumerate(send):
                send[name](write_series(work / f"stow-warm-{index}", 1, rows=64, columns=64))
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("STOW-RS", total=args.batches * len(send))
                for batch in range(args.batches):
                    for index, (name, sender) in enumerate(send.items()):
                        files = write_series(
                            work / f"s{batch}-{index}", args.batch_size, rows=64, columns=64
                        )
                        start = time.perf_counter()
                        sender(files)
                        timings[name].append(time.perf_counter() - start)
                        progress.advance(task)
        finally:
            senders.close()
    print_table(
        console,
        timings,
        args,
        ours="RadGround STOW-RS",
        title=f"STOW-RS: {args.batches} batches of {args.batch_size} small instances into Orthanc "
        "DICOMweb, one request per batch",
    )


def bench_cstore(args: argparse.Namespace, console: Console, work: Path) -> None:
    timings: dict[str, list[float]] = {name: [] for name in SENDERS}
    with OrthancPACS(work / "orthanc") as pacs:
        destination = Destination("ORTHANC", "127.0.0.1", pacs.dicom_port)
        for name, sender in SENDERS.items():  # warm-up: imports, Orthanc's first writes
            sender(write_series(work / f"warm-{len(name)}", 1, rows=64, columns=64), destination)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("sending", total=args.batches * len(SENDERS))
            for batch in range(args.batches):
                for index, (name, send) in enumerate(SENDERS.items()):
                    files = write_series(
                        work / f"b{batch}-{index}", args.batch_size, rows=64, columns=64
                    )
                    start = time.perf_counter()
                    send(files, destination)
                    timings[name].append(time.perf_counter() - start)
                    progress.advance(task)
    print_table(console, timings, args, ours="RadGround StorageSCU",
                title=f"{args.batches} batches of {args.batch_size} small instances into Orthanc, "
                      "one association per batch")


def print_table(console: Console, timings: dict[str, list[float]], args: argparse.Namespace, *,
                ours: str, title: str) -> None:
    table = Table(title=title)
    for column in (
        "sender",
        "batch median ms",
        "batch p95 ms",
        "ms / instance",
        "instances/s",
        "RadGround is",
    ):
        table.add_column(column, justify="left" if column == "sender" else "right")
    our_median = statistics.median(timings[ours])
    for name, values in timings.items():
        median = statistics.median(values)
        p95 = statistics.quantiles(values, n=20)[-1]
        ratio = "" if name == ours else f"{median / our_median:.2f}x faster"
        table.add_row(
            name,
            f"{median * 1000:.0f}",
            f"{p95 * 1000:.0f}",
            f"{median * 1000 / args.batch_size:.1f}",
            f"{args.batch_size / median:.0f}",
            ratio,
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=("cstore", "stow", "both"), default="both",
                        help="C-STORE senders, STOW-RS senders or both (default both)")
    parser.add_argument("--batches", type=int, default=30, help="batches per sender (default 30)")
    parser.add_argument("--batch-size", type=int, default=4, help="instances per batch (default 4)")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="radground-delivery-") as tmp:
        work = Path(tmp)
        if args.protocol in ("cstore", "both"):
            bench_cstore(args, console, work)
        if args.protocol in ("stow", "both"):
            bench_stow(args, console, work)


if __name__ == "__main__":
    main()
