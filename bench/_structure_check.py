"""What the structural check of received data sets costs (``bench/ingest.py --structure-check``).

Two measurements, both in one process and interleaved so that the load of a shared
machine hits both sides alike:

* the check alone: :func:`dicom_node.structure.check_structure` over each load's
  encoded data sets, microseconds per instance;
* the Storage SCP with and without it: an in-process :class:`~dicom_node.scp.StorageSCP`
  (no fsync, no index: the check's share of the node's own work, larger than its share
  of the node's time with its default fsync and index) receives the same files from
  dcmtk ``storescu`` (TCP_NODELAY), with ``verify_structure`` on and off in ABBA order,
  several rounds; the median CPU milliseconds the SCP's process spends per instance on
  each side and their ratio.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from dicom_node.scp import StorageSCP
from dicom_node.storage import FsyncPolicy, InstanceStore
from dicom_node.structure import check_structure

__all__ = ["check_microseconds", "scp_milliseconds_per_instance"]


def _data_set(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[144 + int.from_bytes(raw[140:144], "little"):]  # after the File Meta group (PS3.10 §7.1)


def check_microseconds(files: list[Path], *, transfer_syntax_uid: str = "1.2.840.10008.1.2.1",
                       repeats: int = 5) -> float:
    """Median microseconds :func:`check_structure` takes per instance of ``files``."""
    data_sets = [_data_set(path) for path in files]
    for data in data_sets:  # warm up
        check_structure(data, transfer_syntax_uid)
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for data in data_sets:
            check_structure(data, transfer_syntax_uid)
        rounds.append((time.perf_counter() - start) / len(data_sets) * 1e6)
    return statistics.median(rounds)


def _send_once(files: list[Path], *, verify_structure: bool, work: Path) -> float:
    """CPU seconds per instance this process (the SCP's threads) spends receiving ``files``
    from ``storescu`` (CPU, not wall time: on a shared machine wall time swings by more
    than the check costs)."""
    root = Path(tempfile.mkdtemp(dir=work))
    store = InstanceStore(root, fsync=FsyncPolicy.NEVER)
    scp = StorageSCP(store, ae_title="RADGROUND", verify_structure=verify_structure)
    _, port = scp.start("127.0.0.1", 0)
    try:
        start = time.process_time()
        done = subprocess.run(
            ["storescu", "-aet", "BENCH", "-aec", "RADGROUND", "127.0.0.1", str(port), *map(str, files)],
            env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, check=False,
        )
        elapsed = time.process_time() - start
    finally:
        scp.stop()
    stored = sum(1 for _ in root.rglob("*.dcm"))
    if done.returncode or stored != len(files):
        raise RuntimeError(f"storescu exit {done.returncode}, {stored} of {len(files)} stored")
    return elapsed / len(files)


def scp_milliseconds_per_instance(files: list[Path], *, work: Path, rounds: int = 6) -> tuple[float, float]:
    """Median CPU milliseconds per instance (with the check, without it), ABBA-interleaved rounds."""
    with_check: list[float] = []
    without: list[float] = []
    for round_number in range(rounds):
        order = (True, False) if round_number % 2 == 0 else (False, True)
        for verify in order:
            seconds = _send_once(files, verify_structure=verify, work=work)
            (with_check if verify else without).append(seconds * 1e3)
    return statistics.median(with_check), statistics.median(without)
