"""A real Orthanc PACS for tests and benchmarks, driven through its REST API.

:class:`OrthancPACS` runs Debian's Orthanc (1.10) as a child process with a
config written into a work directory: its own storage and index there, DICOM
and HTTP on free ephemeral ports chosen at the first start, no plugins, no
remote HTTP access, C-ECHO/C-STORE accepted from any AE (so RadGround's SR and
GSPS are stored whatever its calling AE), and its log in ``workdir/orthanc.log``.

Orthanc binds all interfaces and has no option to bind loopback only: the
harness only ever sends to 127.0.0.1 and refuses DICOM peers that are not on
a loopback address. ``restart()`` keeps the storage and the ports, so a test
can take "the PACS" down for a while and bring it back where senders expect it.

Behaviours tests rely on (Orthanc 1.10 defaults, see the Orthanc Book,
"Configuration of Orthanc"): a C-STORE or upload of a SOP Instance UID that
is already stored succeeds but keeps the FIRST instance (``OverwriteInstances``
false); ``POST /modalities/NAME/store`` with ``"Synchronous": true`` answers
only after the peer answered every C-STORE, and with HTTP 500 and Orthanc's
``Details`` when one failed.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx

__all__ = [
    "OrthancError",
    "OrthancNotInstalled",
    "OrthancPACS",
    "OrthancRestError",
    "OrthancStartError",
    "OrthancTimeout",
    "find_orthanc",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Where Debian's ``orthanc`` package installs the server.
DEBIAN_ORTHANC = Path("/usr/sbin/Orthanc")
LOOPBACK = "127.0.0.1"
_LOG_TAIL_LINES = 25
#: Fresh port pairs tried by a first start whose ports were taken meanwhile.
_PORT_ATTEMPTS = 3
#: Config keys only the harness sets.
_MANAGED_KEYS = frozenset(
    {
        "DicomAet",
        "DicomPort",
        "HttpPort",
        "StorageDirectory",
        "IndexDirectory",
        "DicomModalities",
        "DicomModalitiesInDatabase",
        "RemoteAccessAllowed",
        "StableAge",
    }
)


class OrthancError(Exception):
    """Base class of the harness's errors."""


class OrthancStartError(OrthancError):
    """Orthanc did not come up (bad config, port taken, crash); the message has its log tail.

    ``port_in_use`` is true when Orthanc's log says one of its ports was taken.
    """

    port_in_use: bool = False


class OrthancNotInstalled(OrthancStartError):
    """No Orthanc executable on this machine."""


class OrthancRestError(OrthancError):
    """Orthanc answered a REST call with an error status.

    Attributes
    ----------
    status_code
        The HTTP status.
    answer
        Orthanc's JSON error answer (``Message``, ``Details``, ``OrthancError``, ...)
        or ``{"text": body}`` when it was not JSON.
    """

    def __init__(self, message: str, *, status_code: int, answer: dict[str, Any]) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.answer = answer


class OrthancTimeout(OrthancError, TimeoutError):
    """:meth:`OrthancPACS.wait_for` ran out of time."""


def find_orthanc() -> Path:
    """The Orthanc executable (``Orthanc`` on PATH, else Debian's ``/usr/sbin/Orthanc``).

    Raises
    ------
    OrthancNotInstalled
        With the command that installs it.
    """
    found = shutil.which("Orthanc")
    if found:
        return Path(found)
    if DEBIAN_ORTHANC.is_file() and os.access(DEBIAN_ORTHANC, os.X_OK):
        return DEBIAN_ORTHANC
    raise OrthancNotInstalled(
        "Orthanc is not installed (no Orthanc on PATH, no /usr/sbin/Orthanc): "
        "`.ci/bootstrap --test` installs it (Debian package `orthanc`); CI installs it"
    )


def _check_loopback(host: str, what: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"{what}: host must be a loopback address (Orthanc here is for tests), got {host!r}"
        )


def _check_ae_title(ae_title: str, what: str) -> None:
    if not ae_title.strip() or len(ae_title) > 16 or "\\" in ae_title:
        raise ValueError(
            f"{what}: AE title must be 1-16 characters without backslash, got {ae_title!r}"
        )


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on all interfaces (Orthanc binds 0.0.0.0)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


#: Running instances (strong references: a forgotten one is still stopped at interpreter exit).
_RUNNING: set[OrthancPACS] = set()


@atexit.register
def _stop_leftovers() -> None:
    for pacs in list(_RUNNING):
        pacs.stop()


class OrthancPACS:
    """One Orthanc server in ``workdir``: start, stop, restart, and its REST API.

    Parameters
    ----------
    workdir
        Holds the config (``orthanc.json``), storage and index (``storage/``)
        and the log (``orthanc.log``). Created if missing.
    aet
        Orthanc's own AE title (``DicomAet``): the called AE for C-ECHO/C-STORE to it.
    modalities
        Peers Orthanc may send to (``DicomModalities``), name -> (AE title,
        host, port); hosts must be loopback. More with :meth:`set_modality`.
    stable_age
        Seconds without a new instance before Orthanc calls a study stable (``StableAge``).
    extra_config
        Further config keys, applied last (e.g. ``{"OverwriteInstances": True}``).
    executable
        The Orthanc binary; default :func:`find_orthanc`.
    start_timeout
        Seconds :meth:`start` waits for the REST API and the DICOM port.
    http_timeout
        Seconds per REST call (a synchronous store waits for the peer: keep it
        above Orthanc's ``DicomScuTimeout``, 10 s by default).

    Examples
    --------
    ::

        with OrthancPACS(tmp_path / "pacs") as pacs:
            pacs.set_modality("RADGROUND", "RADGROUND", "127.0.0.1", node.address[1])
            pacs.upload(Path("ct.dcm"))
            pacs.send_study(study_instance_uid, to="RADGROUND")


            def outputs():
                found = [i for i in pacs.instances_of_study(study_instance_uid) if i["Modality"] in
                ("SR", "PR")] return found if {i["Modality"] for i in found} == {"SR", "PR"} else
                None

            sr_and_gsps = pacs.wait_for(outputs, timeout=30, what="SR and GSPS in Orthanc")
    """

    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] = {},
        stable_age: int = 1,
        extra_config: Mapping[str, Any] = {},
        executable: Path | None = None,
        start_timeout: float = 30.0,
        http_timeout: float = 60.0,
    ) -> None:
        _check_ae_title(aet, "aet")
        if stable_age < 1:
            raise ValueError(f"stable_age must be >= 1 second, got {stable_age}")
        if start_timeout <= 0 or http_timeout <= 0:
            raise ValueError("start_timeout and http_timeout must be positive")
        self.workdir = Path(workdir).resolve()
        self.aet = aet
        self.stable_age = stable_age
        managed = sorted(set(extra_config) & _MANAGED_KEYS)
        if managed:
            raise ValueError(f"extra_config must not set {managed}: the harness manages them "
                             "(use aet=, modalities=, stable_age=; ports are chosen at start)")
        self.extra_config = dict(extra_config)
        self.start_timeout = start_timeout
        self.http_timeout = http_timeout
        self._executable = executable
        self._modalities: dict[str, tuple[str, str, int]] = {}
        for name, (ae_title, host, port) in modalities.items():
            self._remember_modality(name, ae_title, host, port)
        self._process: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None
        self._ports: tuple[int, int] | None = None  # (dicom, http), fixed at the first start

    # -- paths and addresses -------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / "orthanc.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    @property
    def storage_dir(self) -> Path:
        return self.workdir / "storage"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running Orthanc process (``None`` when stopped)."""
        return self._process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _require_ports(self) -> tuple[int, int]:
        if self._ports is None:
            raise OrthancError(
                "Orthanc has not been started yet: its ports are chosen at the first start()"
            )
        return self._ports

    @property
    def dicom_port(self) -> int:
        """Orthanc's DICOM port (C-ECHO/C-STORE SCP at ``(127.0.0.1, dicom_port)``, AE
        :attr:`aet`)."""
        return self._require_ports()[0]

    @property
    def http_port(self) -> int:
        return self._require_ports()[1]

    @property
    def dicom_address(self) -> tuple[str, int]:
        return LOOPBACK, self.dicom_port

    @property
    def url(self) -> str:
        """Base URL of the REST API, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def modalities(self) -> dict[str, tuple[str, str, int]]:
        """The peers this harness configured (name -> (AE title, host, port))."""
        return dict(self._modalities)

    # -- life cycle ----------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        dicom_port, http_port = self._require_ports()
        config: dict[str, Any] = {
            "Name": f"RadGround test PACS {self.aet}",
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": dicom_port,
            "HttpServerEnabled": True,
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpDescribeErrors": True,
            "DicomModalities": {name: list(peer) for name, peer in self._modalities.items()},
            "DicomModalitiesInDatabase": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            # close our SCU association right after a store, so "sent" means "released"
            "DicomAssociationCloseDelay": 0,
            "StableAge": self.stable_age,
            "SaveJobs": False,
            "Plugins": [],
            "LuaScripts": [],
        }
        config.update(self.extra_config)
        return config

    def start(self) -> Self:
        """Write the config and start Orthanc; return when REST and DICOM answer.

        The first start picks free ports; later starts (after :meth:`stop`)
        reuse them and the storage.

        Raises
        ------
        OrthancNotInstalled
            No Orthanc binary.
        OrthancStartError
            Orthanc exited or did not answer within ``start_timeout``; the
            message carries the tail of its log.
        """
        if self.running:
            raise OrthancError(f"Orthanc is already running (pid {self._process.pid})")
        executable = self._executable or find_orthanc()
        if not os.access(executable, os.X_OK) or not Path(executable).is_file():
            raise OrthancNotInstalled(
                f"no Orthanc executable at {executable}: `.ci/bootstrap --test` installs "
                "Orthanc (Debian package `orthanc`); CI installs it"
            )
        if self._ports is not None:
            return self._launch(executable)  # a restart: the same ports or a clear error
        for attempt in range(_PORT_ATTEMPTS):
            self._ports = (dicom_port, http_port) = _free_ports(2)
            try:
                return self._launch(executable)
            except OrthancStartError as exc:
                # another process took a port between our probe and Orthanc's bind: pick others
                if not exc.port_in_use or attempt == _PORT_ATTEMPTS - 1:
                    self._ports = None
                    raise
                logger.info(
                    "Orthanc could not bind %d/%d (taken meanwhile); trying other ports",
                    dicom_port,
                    http_port,
                )
        raise AssertionError("unreachable")

    def _launch(self, executable: Path) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        self.config_path.write_text(json.dumps(self._config(), indent=2), encoding="utf-8")
        with self.log_path.open("ab") as log:
            log_start = log.tell()
            log.write(f"\n--- harness: starting {executable} {self.config_path.name}\n".encode())
            log.flush()
            # --logfile appends Orthanc's own log; stdout/stderr (errors before logging starts) go
            # beside it
            self._process = subprocess.Popen(
                [str(executable), f"--logfile={self.log_path}", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _RUNNING.add(self)
        try:
            self._wait_until_ready()
        except OrthancStartError as exc:
            self.stop()
            exc.port_in_use = "already in use" in self._log_since(log_start)
            raise
        except BaseException:
            self.stop()
            raise
        logger.info(
            "Orthanc %s up: DICOM %d, HTTP %d (pid %d)",
            self.aet,
            self.dicom_port,
            self.http_port,
            self._process.pid,
        )
        return self

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        self._client = httpx.Client(base_url=self.url, timeout=self.http_timeout, trust_env=False)
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                raise OrthancStartError(
                    f"Orthanc exited with status {code} while starting (config "
                    f"{self.config_path}):\n"
                    f"{self.log_tail()}"
                )
            if self._answers() and _accepts(self.dicom_port):
                return
            if time.monotonic() > deadline:
                raise OrthancStartError(
                    f"Orthanc did not answer on HTTP {self.http_port} and DICOM "
                    f"{self.dicom_port} within "
                    f"{self.start_timeout:.0f} s (config {self.config_path}):\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        assert self._client is not None
        try:
            answer = self._client.get("/system", timeout=2.0)
        except httpx.TransportError:
            return False
        try:  # our Orthanc, not something else on that port
            return answer.status_code == 200 and answer.json().get("DicomPort") == self.dicom_port
        except (ValueError, AttributeError):
            return False

    def stop(self, timeout: float = 15.0, *, kill: bool = False) -> None:
        """Stop Orthanc: SIGTERM, wait up to ``timeout`` s, then SIGKILL. Idempotent.

        Orthanc 1.10 takes about 3.5 s to shut down cleanly (its HTTP and DICOM
        servers finish their poll loops). ``kill=True`` sends SIGKILL at once: a
        crashed PACS, or a fast teardown when the storage is thrown away.
        """
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        _RUNNING.discard(self)
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
            process.wait()
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "Orthanc (pid %d) ignored SIGTERM for %.0f s; killing it", process.pid, timeout
            )
            process.kill()
            process.wait()

    def restart(self, *, down_seconds: float = 0.0) -> None:
        """Stop, stay down ``down_seconds``, start again: same ports, same storage,
        same modalities (including those added with :meth:`set_modality`)."""
        self.stop()
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", errors="replace")

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of Orthanc's log (for error messages)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    # -- REST ------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One REST call; raises :class:`OrthancRestError` (with Orthanc's answer) unless 2xx."""
        if self._client is None or not self.running:
            raise OrthancError(f"Orthanc is not running (cannot {method} {path})")
        response = self._client.request(method, path, **kwargs)
        if response.is_success:
            return response
        try:
            answer = response.json()
        except ValueError:
            answer = {"text": response.text}
        if not isinstance(answer, dict):
            answer = {"answer": answer}
        detail = answer.get("Details") or answer.get("Message") or answer.get("text") or ""
        raise OrthancRestError(
            f"Orthanc answered {method} {path} with HTTP {response.status_code}: {detail}".rstrip(
                ": "
            ),
            status_code=response.status_code,
            answer=answer,
        )

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def set_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        """Add or replace peer ``name`` (``PUT /modalities/NAME``); kept across restarts."""
        self._remember_modality(name, ae_title, host, port)
        if self.running:
            self.request(
                "PUT", f"/modalities/{name}", json={"AET": ae_title, "Host": host, "Port": port}
            )

    def _remember_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        if not name or "/" in name:
            raise ValueError(f"modality name must be non-empty without '/', got {name!r}")
        _check_ae_title(ae_title, f"modality {name}")
        _check_loopback(host, f"modality {name}")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"modality {name}: port must be 1-65535, got {port}")
        self._modalities[name] = (ae_title, host, int(port))

    def upload(self, source: Path | str | bytes) -> str:
        """Store one DICOM file (path or its bytes) through ``POST /instances``; its Orthanc ID.

        An already stored SOP Instance UID is answered ``AlreadyStored`` and
        the stored instance is kept (its ID is returned).
        """
        body = source if isinstance(source, bytes) else Path(source).read_bytes()
        answer = self.request("POST", "/instances", content=body,
                              headers={"Content-Type": "application/dicom"}).json()
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise OrthancError(f"upload not stored: {answer}")
        return str(answer["ID"])

    def study_ids(self) -> list[str]:
        """Orthanc IDs of every stored study (``GET /studies``)."""
        return list(self.get_json("/studies"))

    def find_study(self, study_instance_uid: str) -> str | None:
        """The Orthanc ID of the study with this Study Instance UID, or ``None``."""
        matches = self.request(
            "POST", "/tools/lookup", content=study_instance_uid.encode("ascii")
        ).json()
        ids = [m["ID"] for m in matches if m.get("Type") == "Study"]
        return ids[0] if ids else None

    def instances_of_study(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """Every stored instance of a study (empty if the study is unknown).

        Each dict has ``ID`` (Orthanc's), ``SOPClassUID``, ``SOPInstanceUID``,
        ``SeriesInstanceUID``, ``Modality``, ``SeriesDescription`` (``""``
        when absent), ``InstanceNumber`` (``None`` when absent),
        ``TransferSyntaxUID`` (as stored) and ``RemoteAET`` (the sender's AE,
        ``""`` for REST uploads); sorted by series UID and instance number.
        """
        study = self.find_study(study_instance_uid)
        if study is None:
            return []
        series = {
            s["ID"]: s["MainDicomTags"]
            for s in self.get_json(f"/studies/{study}/series", params="expand")
        }
        found = []
        for instance in self.get_json(f"/studies/{study}/instances", params="expand"):
            tags = instance["MainDicomTags"]
            series_tags = series.get(instance["ParentSeries"], {})
            metadata = self.get_json(f"/instances/{instance['ID']}/metadata", params="expand")
            number = tags.get("InstanceNumber")
            found.append({
                "ID": instance["ID"],
                "SOPClassUID": metadata.get("SopClassUid", ""),
                "SOPInstanceUID": tags.get("SOPInstanceUID", ""),
                "SeriesInstanceUID": series_tags.get("SeriesInstanceUID", ""),
                "Modality": series_tags.get("Modality", ""),
                "SeriesDescription": series_tags.get("SeriesDescription", ""),
                "InstanceNumber": int(number) if number not in (None, "") else None,
                "TransferSyntaxUID": metadata.get("TransferSyntax", ""),
                "RemoteAET": metadata.get("RemoteAET", ""),
            })
        found.sort(
            key=lambda i: (i["SeriesInstanceUID"], i["InstanceNumber"] or 0, i["SOPInstanceUID"])
        )
        return found

    def instance_file(self, orthanc_instance_id: str) -> bytes:
        """The stored DICOM file (Part 10 bytes) of one instance, to parse with pydicom."""
        return self.request("GET", f"/instances/{orthanc_instance_id}/file").content

    def send_study(
        self, study_instance_uid: str, *, to: str, synchronous: bool = True
    ) -> dict[str, Any]:
        """C-STORE a whole study to modality ``to`` (``POST /modalities/NAME/store``).

        Returns Orthanc's answer: for a synchronous send the job's summary
        (``InstancesCount``, ``FailedInstancesCount``, ...), otherwise the job
        (``ID``, ``Path``) to poll.

        Raises
        ------
        OrthancError
            The study is not in Orthanc.
        OrthancRestError
            Orthanc could not send (peer down, refused, a store failed): its
            ``Details`` are in the message.
        """
        study = self.find_study(study_instance_uid)
        if study is None:
            raise OrthancError(f"study {study_instance_uid} is not stored in Orthanc {self.aet}")
        answer = self.request("POST", f"/modalities/{to}/store",
                              json={"Resources": [study], "Synchronous": synchronous}).json()
        if synchronous and answer.get("FailedInstancesCount"):
            raise OrthancRestError(
                f"Orthanc sent study to {to} with {answer['FailedInstancesCount']} failed "
                f"instance(s): {answer}",
                status_code=200,
                answer=answer,
            )
        return answer

    def wait_for(self, predicate: Callable[[], T], timeout: float, *, interval: float = 0.1,
                 what: str = "condition") -> T:
        """Poll ``predicate`` until it returns something truthy; return that.

        Raises
        ------
        OrthancTimeout
            ``timeout`` seconds passed (the message names ``what``).
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise OrthancTimeout(f"{what} not met within {timeout:g} s")
            time.sleep(interval)
