"""Delivery benchmark: RadGround's Storage SCU against dcmtk's storescu and a plain pynetdicom SCU, into Orthanc.

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
the ratios. Usage::

    .venv/bin/python bench/delivery.py [--batches 30] [--batch-size 4]
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
from tests.integration.orthanc import OrthancPACS

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
    subprocess.run(["storescu", "-aet", "STORESCU", "-aec", destination.ae_title, destination.host,
                    str(destination.port), *map(str, files)], check=True, capture_output=True, timeout=120)


SENDERS: dict[str, Callable[[list[Path], Destination], None]] = {
    "RadGround StorageSCU": send_radground,
    "plain pynetdicom SCU": send_pynetdicom,
    "dcmtk storescu": send_storescu,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=30, help="batches per sender (default 30)")
    parser.add_argument("--batch-size", type=int, default=4, help="instances per association (default 4)")
    args = parser.parse_args()
    console = Console()
    timings: dict[str, list[float]] = {name: [] for name in SENDERS}
    with tempfile.TemporaryDirectory(prefix="radground-delivery-") as tmp:
        work = Path(tmp)
        with OrthancPACS(work / "orthanc") as pacs:
            destination = Destination("ORTHANC", "127.0.0.1", pacs.dicom_port)
            for name, send in SENDERS.items():  # warm-up: imports, Orthanc's first writes
                send(write_series(work / f"warm-{len(name)}", 1, rows=64, columns=64), destination)
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("sending", total=args.batches * len(SENDERS))
                for batch in range(args.batches):
                    for index, (name, send) in enumerate(SENDERS.items()):
                        files = write_series(work / f"b{batch}-{index}", args.batch_size, rows=64, columns=64)
                        start = time.perf_counter()
                        send(files, destination)
                        timings[name].append(time.perf_counter() - start)
                        progress.advance(task)
    table = Table(title=f"{args.batches} batches of {args.batch_size} small instances into Orthanc, "
                        "one association per batch")
    for column in ("sender", "batch median ms", "batch p95 ms", "ms / instance", "instances/s", "RadGround is"):
        table.add_column(column, justify="left" if column == "sender" else "right")
    ours = statistics.median(timings["RadGround StorageSCU"])
    for name, values in timings.items():
        median = statistics.median(values)
        p95 = statistics.quantiles(values, n=20)[-1]
        ratio = "" if name.startswith("RadGround") else f"{median / ours:.1f}x faster"
        table.add_row(name, f"{median * 1000:.0f}", f"{p95 * 1000:.0f}", f"{median * 1000 / args.batch_size:.1f}",
                      f"{args.batch_size / median:.0f}", ratio)
    console.print(table)


if __name__ == "__main__":
    main()
