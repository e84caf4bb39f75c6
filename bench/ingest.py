"""Ingest benchmark: RadGround's Storage SCP against dcmtk's storescp and a plain pynetdicom SCP.

The same loads, in one run, on loopback:

* ``small``: 1000 x 32 KB CT instances from dcmtk ``storescu`` as Debian ships it
  (Nagle on), and with ``TCP_NODELAY=1``, and from a pynetdicom SCU;
* ``large``: 300 x 512 KB instances from ``storescu`` with ``TCP_NODELAY=1``;
* ``4 senders``: the large load split over four concurrent ``storescu`` processes.

RadGround runs as ``radground serve`` with its embedded defaults: SQLite index,
fsync of every file and directory entry, study completion on; once more with
``storage.fsync = "never"`` to show what durability costs. The plain pynetdicom
SCP writes the received bytes to a file and nothing else, once as is and once
with an fsync of the file and its directory (RadGround's durability, nothing
else); dcmtk's storescp writes files (its default: no fsync, no index).

DICOM TLS (a second table, same run): RadGround TLS-only (``node.tls.required``,
mutual TLS, the BCP 195 profile) against RadGround plain, and dcmtk's storescp
with ``+tls`` against storescp plain; the sender is ``storescu`` with
``TCP_NODELAY=1`` (with ``+tls`` and a client certificate for the TLS
receivers), each receiver in the same configuration as in the first table.

Prints instances/s per receiver and the ratios to the peers. Usage::

    .venv/bin/python bench/ingest.py            # full run (~8 min on 2 cores)
    .venv/bin/python bench/ingest.py --quick    # 1/5 of the counts
    .venv/bin/python bench/ingest.py --tls-only --quick   # only the TLS table
    .venv/bin/python bench/ingest.py --compare-patches --quick   # each pynetdicom patch vs without
    it .venv/bin/python bench/ingest.py --structure-check   # only what the structural check costs
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tests.factories import write_series
from tests.integration.tls_pki import Credential, certificate_authority, issue

PLAIN_PYNETDICOM_SCP = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from pynetdicom import AE, evt, AllStoragePresentationContexts, _config
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    _config.LOG_HANDLER_LEVEL = "none"
    out = Path(sys.argv[2])
    durable = sys.argv[3] == "fsync"
    def handle_store(event):
        with open(out / event.request.AffectedSOPInstanceUID, "wb") as f:
            f.write(event.encoded_dataset())
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if durable:
            directory = os.open(out, os.O_RDONLY)
            os.fsync(directory)
            os.close(directory)
        return 0x0000
    ae = AE(ae_title="PLAIN")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(
            cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
    ae.maximum_associations = 64
    ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_C_STORE, handle_store)])
    """
)

PYNETDICOM_SCU = textwrap.dedent(
    """
    import sys
    from pynetdicom import AE, _config
    from pydicom import dcmread
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    _config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title=sys.argv[2])
    bad = 0
    for path in sys.argv[3:]:
        status = assoc.send_c_store(dcmread(path))
        bad += int(not status or status.Status != 0)
    assoc.release()
    sys.exit(1 if bad else 0)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"receiver did not listen on port {port}")


@dataclass(frozen=True)
class BenchPki:
    """The CA, the receivers' certificate and the sender's client certificate of the TLS rows."""

    ca: Path
    receiver: Credential
    sender: Credential

    @classmethod
    def make(cls, folder: Path) -> BenchPki:
        authority = certificate_authority(folder / "ca")
        return cls(authority.certificate, issue(authority, folder / "receiver", "receiver"),
                   issue(authority, folder / "sender", "sender"))

    def storescu_options(self) -> list[str]:
        return ["+tls", str(self.sender.key), str(self.sender.certificate), "+cf", str(self.ca)]


@dataclass
class Receiver:
    name: str
    ae_title: str
    port: int
    process: subprocess.Popen
    output: Path
    #: storescu options to reach it (TLS), none for plain TCP.
    sender_options: tuple[str, ...] = ()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_radground(
    work: Path,
    processes: int,
    fsync: str = "always",
    *,
    patches: tuple[str, ...] | None = None,
    command: str = "serve",
    tls: BenchPki | None = None,
) -> Receiver:
    """``radground serve`` (or ``node``: no workers) on a free port; ``patches``:
    node.pynetdicom_patches; ``tls``: TLS only (node.tls.required), mutual TLS."""
    port = free_port()
    tls_port = free_port() if tls is not None else None
    work.mkdir(parents=True, exist_ok=True)
    config = work / "radground.toml"
    patch_line = (
        "" if patches is None else f"pynetdicom_patches = {list(patches)!r}\n".replace("'", '"')
    )
    config.write_text(
        f"[node]\nport = {port}\nlistener_processes = {processes}\nmax_associations = "
        f"64\n{patch_line}"
        f'[storage]\nroot = "{work / "instances"}"\nreserve_mb = 0\nfsync = "{fsync}"\n'
        f'[database]\nurl = "sqlite:///{work / "radground.db"}"\n'
        # ingest only: no console competing for the CPU (or for port 8080)
        '[web]\nenabled = false\n'
        '[logging]\nlevel = "WARNING"\n'
    )
    if tls is not None:
        with config.open("a") as section:
            section.write(
                f"[node.tls]\nenabled = true\nrequired = true\nport = {tls_port}\n"
                f'certificate = "{tls.receiver.certificate}"\nkey = "{tls.receiver.key}"\n'
                f'ca_bundle = "{tls.ca}"\nverify_client = true\n'
            )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADGROUND_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "radground", "--config", str(config), command],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    listening = tls_port if tls_port is not None else port
    wait_for_port(listening)
    wait_until_settled(process.pid)  # listener processes and embedded workers done starting
    return Receiver(
        f"RadGround ({processes} proc)" + (" TLS" if tls is not None else ""), "RADGROUND",
        listening, process, work / "instances",
        tuple(tls.storescu_options()) if tls is not None else (),
    )


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its descendants (Linux /proc)."""
    total, pending = 0.0, [pid]
    ticks = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return total


def wait_until_settled(pid: int, timeout: float = 60.0) -> None:
    """Wait until a started service and its children stop using CPU (imports, model
    loading), so that start-up work does not compete with the measured load."""
    deadline = time.monotonic() + timeout
    previous = _tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = _tree_cpu_seconds(pid)
        if current - previous < 0.05:  # under 10 % of one core
            return
        previous = current


def start_storescp(work: Path, tls: BenchPki | None = None) -> Receiver:
    """dcmtk's storescp; ``tls``: ``+tls`` with its default BCP 195 profile, a client
    certificate required (``+rv``), as RadGround's TLS rows."""
    port = free_port()
    out = work / "storescp"
    out.mkdir()
    options = [] if tls is None else [
        "+tls", str(tls.receiver.key), str(tls.receiver.certificate), "+cf", str(tls.ca)
    ]
    # its best configuration: Nagle off for its own responses too
    process = subprocess.Popen(["storescp", "-aet", "STORESCP", *options, "-od", str(out),
                                str(port)],
                               env={**os.environ, "TCP_NODELAY": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return Receiver("dcmtk storescp" + (" TLS" if tls is not None else ""), "STORESCP", port,
                    process, out, tuple(tls.storescu_options()) if tls is not None else ())


def start_plain(work: Path, fsync: bool = False) -> Receiver:
    port = free_port()
    out = work / "plain"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-c", PLAIN_PYNETDICOM_SCP, str(port), str(out),
                                "fsync" if fsync else "no-fsync"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return Receiver(
        "plain pynetdicom SCP" + (" + fsync" if fsync else ""), "PLAIN", port, process, out
    )


def storescu_command(receiver: Receiver, files: list[Path]) -> list[str]:
    return [
        "storescu",
        "-aet",
        "BENCH",
        "-aec",
        receiver.ae_title,
        *receiver.sender_options,
        "127.0.0.1",
        str(receiver.port),
        *map(str, files),
    ]


def send(receiver: Receiver, files: list[Path], sender: str, senders: int = 1) -> float:
    """Send ``files`` with ``sender``; returns seconds until every sender finished."""
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if sender == "storescu+nodelay":
        env["TCP_NODELAY"] = "1"
    chunks = [files[i::senders] for i in range(senders)]
    start = time.perf_counter()
    if sender == "pynetdicom":
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    PYNETDICOM_SCU,
                    str(receiver.port),
                    receiver.ae_title,
                    *map(str, chunk),
                ],
                env=env,
            )
            for chunk in chunks
        ]
    else:
        procs = [
            subprocess.Popen(
                storescu_command(receiver, chunk),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for chunk in chunks
        ]
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"{sender} -> {receiver.name} failed: exit codes {codes}")
    return elapsed


def count_received(receiver: Receiver) -> int:
    return sum(1 for p in receiver.output.rglob("*") if p.is_file() and not p.name.startswith("."))


SCENARIOS = [
    # (name, load, sender, concurrent senders)
    ("32 KB, storescu (Nagle on)", "small", "storescu", 1),
    ("32 KB, storescu TCP_NODELAY", "small", "storescu+nodelay", 1),
    ("32 KB, pynetdicom SCU", "small", "pynetdicom", 1),
    ("512 KB, storescu TCP_NODELAY", "large", "storescu+nodelay", 1),
    ("512 KB, 4 x storescu TCP_NODELAY", "large", "storescu+nodelay", 4),
]


#: What each pynetdicom patch was made to speed up: the load/sender it is measured on.
PATCH_SCENARIOS = [
    ("32 KB, storescu (Nagle on)", "small", "storescu"),
    ("32 KB, storescu TCP_NODELAY", "small", "storescu+nodelay"),
    ("512 KB, storescu TCP_NODELAY", "large", "storescu+nodelay"),
]
ALL_PATCHES = ("pdu-limits", "quick-ack", "event-reactors", "store-fast-path", "scu-response-order")
#: (variant, node.pynetdicom_patches): all patches, each speed patch left out, pynetdicom's stock
#: path.
PATCH_VARIANTS = [
    ("all patches", ALL_PATCHES),
    ("- quick-ack", tuple(p for p in ALL_PATCHES if p != "quick-ack")),
    ("- event-reactors", tuple(p for p in ALL_PATCHES if p != "event-reactors")),
    ("- store-fast-path", tuple(p for p in ALL_PATCHES if p != "store-fast-path")),
    ("stock pynetdicom", ()),
]


def compare_patches(
    args: argparse.Namespace,
    console: Console,
    *,
    variants: list[tuple[str, tuple[str, ...]]],
    scenarios: list[tuple[str, str, str]],
) -> None:
    """RadGround with all its pynetdicom patches against itself without each, in one run.

    Every variant runs as its own ``radground node`` (1 listener process, no
    fsync, so that the network path is what differs), all started once; the
    rounds interleave the variants so that machine load falls on all alike.
    Prints the median instances/s and "all patches / variant" per load.
    """
    import statistics

    with tempfile.TemporaryDirectory(prefix="radground-bench-patches-") as tmp:
        work = Path(tmp)
        sizes = {"small": (args.small, 128), "large": (args.large, 512)}
        loads = {  # fresh instances for every send (a re-sent instance takes the duplicate path)
            (scenario, r): write_series(work / f"load-{s}-{r}", sizes[load][0], rows=sizes[load][1],
                                        columns=sizes[load][1])
            for r in range(args.rounds)
            for s, (scenario, load, _) in enumerate(scenarios)
        }
        receivers = {
            name: start_radground(work / f"node-{i}", 1, "never", patches=patches, command="node")
            for i, (name, patches) in enumerate(variants)
        }
        rates: dict[tuple[str, str], list[float]] = {}
        try:
            for r in range(args.rounds):
                for scenario, _, sender in scenarios:
                    files = loads[(scenario, r)]
                    order = variants if r % 2 == 0 else variants[::-1]
                    for name, _ in order:
                        before = count_received(receivers[name])
                        elapsed = send(receivers[name], files, sender)
                        if count_received(receivers[name]) - before < len(files):
                            raise RuntimeError(f"{name} did not store every instance of {scenario}")
                        rates.setdefault((scenario, name), []).append(len(files) / elapsed)
                console.print(f"round {r + 1}/{args.rounds} done")
        finally:
            for receiver in receivers.values():
                receiver.stop()
    table = Table(
        title=f"RadGround's pynetdicom patches, instances/s (median of {args.rounds} interleaved "
        "rounds; 1 listener, no fsync) and ratio all patches / variant"
    )
    table.add_column("load / sender")
    for name, _ in variants:
        table.add_column(name, justify="right")
    for scenario, *_ in scenarios:
        best = statistics.median(rates[(scenario, variants[0][0])])
        cells = []
        for name, _ in variants:
            median = statistics.median(rates[(scenario, name)])
            cells.append(
                f"{median:.0f}"
                if name == variants[0][0]
                else f"{median:.0f} ({best / median:.2f}x)"
            )
        table.add_row(scenario, *cells)
    console.print(table)
    for scenario, *_ in scenarios:
        for name, _ in variants:
            console.print(
                f"{scenario} | {name}: "
                + ", ".join(f"{rate:.0f}" for rate in rates[(scenario, name)])
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1/5 of the instance counts")
    parser.add_argument("--small", type=int, default=1000, help="number of 32 KB instances")
    parser.add_argument("--large", type=int, default=300, help="number of 512 KB instances")
    parser.add_argument(
        "--compare-patches",
        action="store_true",
        help="instead: RadGround with and without each of its pynetdicom patches, interleaved",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="--compare-patches: interleaved rounds"
    )
    parser.add_argument("--variants", default=None,
                        help="--compare-patches: semicolon-separated variant names (default: all)")
    parser.add_argument(
        "--scenarios",
        default=None,
        help="--compare-patches: semicolon-separated load/sender names (default: all)",
    )
    parser.add_argument(
        "--tls-only", action="store_true", help="only the DICOM TLS table (TLS vs plain)"
    )
    parser.add_argument(
        "--structure-check",
        action="store_true",
        help="only measure the structural check of received data sets (with vs without)",
    )
    args = parser.parse_args()
    if args.quick:
        args.small, args.large = args.small // 5, args.large // 5
    if args.structure_check:
        structure_check_table(args.small // 5, args.large // 5)
        return
    if args.compare_patches:
        variants = [
            v for v in PATCH_VARIANTS if not args.variants or v[0] in args.variants.split(";")
        ]
        scenarios = [
            s for s in PATCH_SCENARIOS if not args.scenarios or s[0] in args.scenarios.split(";")
        ]
        if not variants or not scenarios:
            sys.exit("--variants/--scenarios matched nothing: " + "; ".join(
                [v[0] for v in PATCH_VARIANTS] + [s[0] for s in PATCH_SCENARIOS]))
        for tool in ("storescu",):
            if shutil.which(tool) is None:
                sys.exit(f"{tool} not found: install dcmtk (.ci/bootstrap --test)")
        compare_patches(args, Console(width=200), variants=variants, scenarios=scenarios)
        return
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install dcmtk (.ci/bootstrap --test)")
    console = Console()
    if not args.tls_only:
        ingest_table(args, console)
    tls_table(args, console)


def measure(
    console: Console,
    work: Path,
    loads: dict[str, list[Path]],
    scenarios: list[tuple[str, str, str, int]],
    receivers_factories: list[tuple[str, Callable[[Path], Receiver]]],
) -> dict[tuple[str, str], float]:
    """Instances/s of every (scenario, receiver), each receiver started afresh per scenario."""
    rates: dict[tuple[str, str], float] = {}
    total = len(scenarios) * len(receivers_factories)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmark", total=total)
        for scenario, load, sender, senders in scenarios:
            files = loads[load]
            for name, factory in receivers_factories:
                progress.update(task, description=f"{scenario} -> {name}")
                run_dir = work / f"run-{len(rates)}"
                run_dir.mkdir()
                receiver = factory(run_dir)
                try:
                    elapsed = send(receiver, files, sender, senders)
                    received = count_received(receiver)
                finally:
                    receiver.stop()
                if received < len(files):
                    raise RuntimeError(f"{name} stored {received} of {len(files)} instances")
                rates[(scenario, name)] = len(files) / elapsed
                shutil.rmtree(run_dir, ignore_errors=True)
                progress.advance(task)
    return rates


#: The TLS table's loads: storescu with TCP_NODELAY=1 (plain or +tls as the receiver needs).
TLS_SCENARIOS = [
    ("32 KB, storescu TCP_NODELAY", "small", "storescu+nodelay", 1),
    ("512 KB, storescu TCP_NODELAY", "large", "storescu+nodelay", 1),
    ("512 KB, 4 x storescu TCP_NODELAY", "large", "storescu+nodelay", 4),
]


def tls_table(args: argparse.Namespace, console: Console) -> None:
    """RadGround TLS vs plain and vs dcmtk storescp with TLS, in one run."""
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="radground-bench-tls-") as tmp:
        work = Path(tmp)
        pki = BenchPki.make(work / "pki")
        loads = {
            "small": write_series(work / "small", args.small, rows=128, columns=128),
            "large": write_series(work / "large", args.large, rows=512, columns=512),
        }
        factories: list[tuple[str, Callable[[Path], Receiver]]] = [
            (f"RadGround {cores} proc", lambda d: start_radground(d, cores)),
            (f"RadGround {cores} proc TLS", lambda d: start_radground(d, cores, tls=pki)),
            ("dcmtk storescp", start_storescp),
            ("dcmtk storescp TLS", lambda d: start_storescp(d, tls=pki)),
        ]
        rates = measure(console, work, loads, TLS_SCENARIOS, factories)
    names = [name for name, _ in factories]
    table = Table(title=f"DICOM TLS ingest, instances/s (loopback, {cores} cores; TLS: mutual, "
                  "BCP 195 profile; RadGround: SQLite index, fsync)")
    table.add_column("load / sender")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("RG TLS / RG plain", justify="right")
    table.add_column("storescp TLS / plain", justify="right")
    table.add_column("RG TLS / storescp TLS", justify="right")
    for scenario, *_ in TLS_SCENARIOS:
        rg, rg_tls, dcmtk, dcmtk_tls = (rates[(scenario, n)] for n in names)
        table.add_row(
            scenario,
            *(f"{rates[(scenario, n)]:.0f}" for n in names),
            f"{rg_tls / rg:.2f}x",
            f"{dcmtk_tls / dcmtk:.2f}x",
            f"{rg_tls / dcmtk_tls:.2f}x",
        )
    console.print(table)


def ingest_table(args: argparse.Namespace, console: Console) -> None:
    """The first table: RadGround against storescp and a plain pynetdicom SCP."""
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="radground-bench-") as tmp:
        work = Path(tmp)
        loads = {
            "small": write_series(work / "small", args.small, rows=128, columns=128),
            "large": write_series(work / "large", args.large, rows=512, columns=512),
        }
        receivers_factories = [
            ("RadGround 1 proc", lambda d: start_radground(d, 1)),
            (f"RadGround {cores} proc", lambda d: start_radground(d, cores)),
            (f"RadGround {cores} proc, no fsync", lambda d: start_radground(d, cores, "never")),
            ("dcmtk storescp", start_storescp),
            ("plain pynetdicom", start_plain),
            ("plain pynetdicom + fsync", lambda d: start_plain(d, fsync=True)),
        ]
        rates = measure(console, work, loads, SCENARIOS, receivers_factories)

    names = [name for name, _ in receivers_factories]
    table = Table(
        title=f"Ingest, instances/s (loopback, {cores} cores; RadGround: SQLite index, fsync "
        "unless noted)"
    )
    table.add_column("load / sender")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("RG / storescp", justify="right")
    table.add_column("RG / pynetdicom", justify="right")
    table.add_column("RG / pynetdicom + fsync", justify="right")
    table.add_column("RG no fsync / pynetdicom", justify="right")
    for scenario, *_ in SCENARIOS:
        rg_one, rg_many, rg_no_fsync, storescp, plain, plain_fsync = (
            rates[(scenario, n)] for n in names
        )
        best = max(rg_one, rg_many)
        table.add_row(
            scenario,
            *(f"{rates[(scenario, n)]:.0f}" for n in names),
            f"{best / storescp:.2f}x",
            f"{best / plain:.2f}x",
            f"{best / plain_fsync:.2f}x",
            f"{rg_no_fsync / plain:.2f}x",
        )
    console.print(table)
    console.print(
        "RG = RadGround's better of 1 and several listener processes, fsync of every "
        "file and directory entry."
    )
    one = rates[("512 KB, storescu TCP_NODELAY", names[1])]
    four = rates[("512 KB, 4 x storescu TCP_NODELAY", names[1])]
    plain_one = rates[("512 KB, storescu TCP_NODELAY", names[4])]
    plain_four = rates[("512 KB, 4 x storescu TCP_NODELAY", names[4])]
    console.print(
        f"4 concurrent senders vs 1, RadGround ({cores} proc): {four / one:.2f}x; "
        f"plain pynetdicom: {plain_four / plain_one:.2f}x"
    )


def structure_check_table(small: int, large: int) -> None:
    """Per-instance cost of the structural check: alone, and in the SCP with vs without it."""
    from bench._structure_check import check_microseconds, scp_milliseconds_per_instance

    table = Table(
        title="Structural check of received data sets (in-process SCP, no fsync, no index; "
        "storescu)"
    )
    for column in ("load", "check alone, µs/instance", "SCP with check, CPU ms/instance",
                   "SCP without, CPU ms/instance", "with / without"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory(prefix="radground-bench-") as tmp:
        work = Path(tmp)
        for name, count, size in (("32 KB", small, 128), ("512 KB", large, 512)):
            files = write_series(work / name.replace(" ", ""), count, rows=size, columns=size)
            alone = check_microseconds(files)
            with_check, without = scp_milliseconds_per_instance(files, work=work)
            table.add_row(
                f"{count} x {name}",
                f"{alone:.0f}",
                f"{with_check:.2f}",
                f"{without:.2f}",
                f"{with_check / without:.3f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
