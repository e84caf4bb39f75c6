"""The Storage SCP: C-ECHO and C-STORE, admission control, durable storage.

The SCP is deliberately thin (STYLE.md §5): handlers are declared in one place
and return DICOM statuses; no pixel decoding and no slow work on the
association thread. Received bytes are stored exactly as they arrived
(:mod:`dicom_node.storage`) once their structure is checked
(:mod:`dicom_node.structure`: every length and delimiter, the Pixel Data's
size; a damaged data set is refused and leaves nothing behind), and the
caller's ``on_stored`` hook is told about each instance; the node knows
nothing of databases or queues.

Speed: every association reads through :mod:`dicom_node.sockets` (quick ACKs,
``TCP_NODELAY``), which removes the Nagle/delayed-ACK stall of senders with
Nagle's algorithm on (dcmtk's ``storescu`` as Debian ships it, many PACS), its
threads wait for events instead of polling (:mod:`dicom_node.reactors`), and
C-STORE command sets are read and written directly
(:mod:`dicom_node.store_fastpath`).
"""

from __future__ import annotations

import io
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node.conformance import StoreStatus, contexts_preferring_requestor, scp_contexts
from dicom_node.errors import (
    DataSetStructureError,
    DuplicateInstanceError,
    InstanceConflictError,
    InvalidInstanceError,
    PixelDataLengthError,
    StorageError,
    StoreRefusedError,
)
from dicom_node.part10 import PREAMBLE, file_meta_information, read_header
from dicom_node.reactors import make_event_driven
from dicom_node.sockets import tune_association_socket
from dicom_node.storage import InstanceStore, PendingWrite, StagedWrite, StoreOutcome
from dicom_node.store_fastpath import use_store_fast_path
from dicom_node.structure import DataSetStructure, check_structure
from dicom_node.uids import is_valid_uid, short_uid

__all__ = [
    "AllowedPeer",
    "AssociationLimiter",
    "StorageSCP",
    "StoredInstance",
    "ThreadAssociationLimiter",
]

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (PS3.8 §9.3.4): result, source, diagnostic.
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
_REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service user, called AE title not recognised
_REJECT_LIMIT = (0x02, 0x03, 0x02)  # transient, service provider (presentation), local limit exceeded

@dataclass(frozen=True)
class AllowedPeer:
    """A calling AE title allowed to send, optionally only from one host (IP address)."""

    ae_title: str
    host: str | None = None

    def __post_init__(self) -> None:
        if not self.ae_title.strip() or len(self.ae_title) > 16:
            raise ValueError(f"AE title must be 1-16 characters, got {self.ae_title!r}")

    def matches(self, ae_title: str, host: str) -> bool:
        return self.ae_title.strip() == ae_title.strip() and (self.host is None or self.host == host)


class AssociationLimiter(Protocol):
    """Counts concurrent associations (possibly across processes)."""

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...


class ThreadAssociationLimiter:
    """An :class:`AssociationLimiter` for one process."""

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise ValueError(f"maximum associations must be >= 1, got {maximum}")
        self._semaphore = threading.BoundedSemaphore(maximum)

    def try_acquire(self) -> bool:
        return self._semaphore.acquire(blocking=False)

    def release(self) -> None:
        self._semaphore.release()


@dataclass(frozen=True)
class StoredInstance:
    """A received instance written to storage, as told to the ``on_stored`` hook.

    ``header`` is the received data set up to Pixel Data (decoded lazily by
    pydicom). When the hook runs, the file may still be on its way to
    ``relative_path`` and stable storage: a hook that records the instance
    somewhere durable (the index) calls :meth:`wait_durable` before it commits,
    so that nothing refers to a file that a crash could still lose; the flush
    and the hook's work overlap.
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    relative_path: str
    size: int
    outcome: StoreOutcome
    calling_ae_title: str
    peer_host: str
    received_at: datetime
    header: Dataset = field(compare=False, repr=False)
    #: The write still being moved into place and flushed, if any (see :meth:`wait_durable`).
    pending: PendingWrite | None = field(default=None, compare=False, repr=False)

    def wait_durable(self) -> None:
        """Block until the file is at ``relative_path`` and on stable storage (per the store's fsync policy).

        Raises :class:`~dicom_node.errors.StorageError` if it cannot be made durable.
        """
        if self.pending is not None:
            self.pending.wait()


class _NodeRequestHandler(RequestHandler):
    def _create_association(self) -> Any:
        assoc = super()._create_association()
        tune_association_socket(assoc)
        make_event_driven(assoc)
        _unbind_message_logging(assoc)
        use_store_fast_path(assoc)
        return assoc


def _unbind_message_logging(assoc: Any) -> None:
    """Unbind pynetdicom's message log handlers (bound when its ``LOG_HANDLER_LEVEL``
    is "standard"): they log message contents, which can be patient data."""
    for event, handler in (
        (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
        (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
        (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
        (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
    ):
        assoc.unbind(event, handler)


class _NodeServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with our association socket and, optionally, SO_REUSEPORT.

    SO_REUSEPORT lets several listener processes bind the same port; the
    kernel spreads connections over them, so ingest is not bound to one GIL.
    """

    reuse_port = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, request_handler=_NodeRequestHandler, **kwargs)

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _ReusePortServer(_NodeServer):
    reuse_port = True


class StorageSCP:
    """A Storage SCP (PS3.4 Annex B) with Verification (Annex A).

    Parameters
    ----------
    store
        Where received instances are written.
    ae_title
        This node's AE title.
    on_stored
        Called on the association thread after each instance is durably
        stored; must be quick (an index insert). Raise
        :class:`~dicom_node.errors.StoreRefusedError` to refuse the instance:
        the file is removed again and the sender gets Out of Resources
        (transient) or Processing Failure;
        :class:`~dicom_node.errors.InstanceConflictError` (the SOP Instance
        UID is known in another study or series) gets 0xA900.
    allowed_peers
        Calling AE titles (optionally with host) allowed to associate; empty
        allows any.
    require_called_ae_title
        Reject associations addressed to another AE title.
    limiter
        Caps concurrent associations (default: 10 in this process).
    network_timeout, acse_timeout, dimse_timeout
        Seconds (pynetdicom's timeouts).
    maximum_pdu_size
        Maximum PDU size this node receives (0 = unlimited).
    verify_structure
        Check each data set's structure before Success
        (:func:`~dicom_node.structure.check_structure`); False only to measure
        what the check costs (``bench/ingest.py --structure-check``).
    """

    def __init__(
        self,
        store: InstanceStore,
        *,
        ae_title: str,
        on_stored: Callable[[StoredInstance], None] | None = None,
        allowed_peers: Sequence[AllowedPeer] = (),
        require_called_ae_title: bool = True,
        limiter: AssociationLimiter | None = None,
        network_timeout: float = 60.0,
        acse_timeout: float = 30.0,
        dimse_timeout: float = 60.0,
        maximum_pdu_size: int = 262_144,
        verify_structure: bool = True,
    ) -> None:
        self.store = store
        self.ae_title = ae_title
        self.on_stored = on_stored
        self.allowed_peers = tuple(allowed_peers)
        self.require_called_ae_title = require_called_ae_title
        self.limiter = limiter or ThreadAssociationLimiter(10)
        self.verify_structure = verify_structure
        self._ae = AE(ae_title=ae_title)
        self._ae.supported_contexts = scp_contexts()
        self._ae.maximum_associations = 10_000  # the limiter decides, across processes
        self._ae.network_timeout = network_timeout
        self._ae.acse_timeout = acse_timeout
        self._ae.dimse_timeout = dimse_timeout
        self._ae.maximum_pdu_size = maximum_pdu_size
        self._server: _NodeServer | None = None
        self._slots: set[int] = set()
        self._slots_lock = threading.Lock()
        self._stopped = threading.Event()

    @property
    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        """The event handlers, declared in one place."""
        return [
            (evt.EVT_REQUESTED, self._handle_requested),
            (evt.EVT_CONN_CLOSE, self._handle_conn_close),
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_C_STORE, self._handle_store),
        ]

    def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        """Start listening in background threads; returns the bound (host, port).

        ``port=0`` binds an ephemeral port (tests).
        """
        server_class = _ReusePortServer if reuse_port else _NodeServer
        self._server = self._ae.make_server(
            (host, port), evt_handlers=self.handlers, server_class=server_class
        )
        self._ae._servers.append(self._server)  # as AE.start_server does, so AE.shutdown stops it
        threading.Thread(
            target=self._server.serve_forever, name=f"StorageSCP:{port}", daemon=True
        ).start()
        bound = self._server.server_address
        logger.info("Storage SCP %s listening on %s:%s", self.ae_title, bound[0], bound[1])
        return bound[0], bound[1]

    def serve_forever(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Listen in the calling thread until :meth:`stop` is called from another thread."""
        self.start(host, port, reuse_port=reuse_port)
        self._stopped.wait()

    def stop(self) -> None:
        """Stop listening and abort running associations."""
        self._ae.shutdown()
        self._server = None
        self._stopped.set()

    # -- handlers ---------------------------------------------------------

    def _handle_requested(self, event: evt.Event) -> None:
        """Admission control: calling AE (and host), called AE, association limit."""
        assoc = event.assoc
        calling = assoc.requestor.primitive.calling_ae_title
        called = assoc.requestor.primitive.called_ae_title
        host = assoc.requestor.address
        if self.allowed_peers and not any(p.matches(calling, host) for p in self.allowed_peers):
            logger.warning("Rejected association from %r at %s: calling AE title not allowed", calling, host)
            _reject(assoc, _REJECT_CALLING_AE)
            return
        if self.require_called_ae_title and called.strip() != self.ae_title.strip():
            logger.warning(
                "Rejected association from %r at %s: called AE title %r is not %r",
                calling, host, called, self.ae_title,
            )
            _reject(assoc, _REJECT_CALLED_AE)
            return
        if not self.limiter.try_acquire():
            logger.warning("Rejected association from %r at %s: maximum concurrent associations reached", calling, host)
            _reject(assoc, _REJECT_LIMIT)
            return
        with self._slots_lock:
            self._slots.add(id(assoc))
        assoc.acceptor.supported_contexts = contexts_preferring_requestor(
            assoc.requestor.primitive.presentation_context_definition_list
        )

    def _handle_conn_close(self, event: evt.Event) -> None:
        with self._slots_lock:
            held = id(event.assoc) in self._slots
            self._slots.discard(id(event.assoc))
        if held:
            self.limiter.release()

    def _handle_echo(self, event: evt.Event) -> int:
        return StoreStatus.SUCCESS

    def _handle_store(self, event: evt.Event) -> int | Dataset:
        received_at = datetime.now(UTC)
        assoc = event.assoc
        calling, host = assoc.requestor.ae_title, assoc.requestor.address
        request = cast(C_STORE, event.request)
        received = request.DataSet
        if received is None:  # PS3.7 9.3.1.1: a C-STORE-RQ carries a data set; refuse one that does not
            return self._refuse(StoreStatus.CANNOT_UNDERSTAND, "C-STORE request without a data set", calling, "-")
        sop_class_uid = str(request.AffectedSOPClassUID)
        sop_instance_uid = str(request.AffectedSOPInstanceUID)
        transfer_syntax_uid = str(event.context.transfer_syntax)
        token = short_uid(sop_instance_uid)
        file_meta = file_meta_information(
            media_storage_sop_class_uid=sop_class_uid,
            media_storage_sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            implementation_class_uid=self._ae.implementation_class_uid,
            implementation_version_name=self._ae.implementation_version_name or "",
            source_application_entity_title=calling,
        )
        # Staged first, so that its fsync runs while the structure and header are read.
        try:
            with received.getbuffer() as data_set:
                staged = self.store.stage((PREAMBLE + file_meta, data_set), sop_instance_uid=sop_instance_uid)
                structure = (
                    _check_structure_or_discard(data_set, transfer_syntax_uid, staged)
                    if self.verify_structure else None
                )
        except InvalidInstanceError as exc:
            return self._refuse(StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc), calling, token)
        except StorageError as exc:  # out of space, or the file system refused
            return self._refuse(StoreStatus.OUT_OF_RESOURCES, str(exc), calling, token)
        except DataSetStructureError as exc:  # PS3.4 B.2.3: cannot be parsed into elements
            return self._refuse(StoreStatus.CANNOT_UNDERSTAND, str(exc), calling, token)
        except PixelDataLengthError as exc:  # parsed, but not the image its attributes describe
            return self._refuse(StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc), calling, token)
        if structure is not None and structure.inflated is not None:  # read what the check inflated
            received, transfer_syntax_uid_read = io.BytesIO(structure.inflated), str(ExplicitVRLittleEndian)
        else:
            transfer_syntax_uid_read = transfer_syntax_uid
        try:
            header, study_uid, series_uid = _read_header_checked(
                received, transfer_syntax_uid_read, sop_class_uid, sop_instance_uid
            )
            pending = staged.place(study_instance_uid=study_uid, series_instance_uid=series_uid)
        except _Refusal as refusal:
            staged.discard()
            return self._refuse(refusal.status, refusal.reason, calling, token)
        except DuplicateInstanceError as exc:
            return self._refuse(StoreStatus.DUPLICATE_SOP_INSTANCE, str(exc), calling, token)
        except InvalidInstanceError as exc:
            return self._refuse(StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc), calling, token)
        except StorageError as exc:
            return self._refuse(StoreStatus.OUT_OF_RESOURCES, str(exc), calling, token)
        result = pending.result
        instance = StoredInstance(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            relative_path=result.relative_path,
            size=result.size,
            outcome=result.outcome,
            calling_ae_title=calling,
            peer_host=host,
            received_at=received_at,
            header=header,
            pending=pending,
        )
        try:
            if self.on_stored is not None:
                self.on_stored(instance)
            pending.wait()
        except DuplicateInstanceError as exc:  # policy reject: the index already has it
            return self._refuse(StoreStatus.DUPLICATE_SOP_INSTANCE, str(exc), calling, token)
        except StorageError as exc:  # the file could not be made durable (disk full, I/O error)
            return self._refuse(StoreStatus.OUT_OF_RESOURCES, str(exc), calling, token)
        except InstanceConflictError as exc:  # a known SOP Instance UID in another study or series
            pending.abandon()
            return self._refuse(StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc), calling, token)
        except StoreRefusedError as exc:
            pending.abandon()
            status = StoreStatus.OUT_OF_RESOURCES if exc.transient else StoreStatus.PROCESSING_FAILURE
            return self._refuse(status, str(exc), calling, token)
        except BaseException:
            pending.abandon()
            raise
        logger.debug("Stored instance %s from %r (%s)", token, calling, result.outcome.value)
        return StoreStatus.SUCCESS

    @staticmethod
    def _refuse(status: int, reason: str, calling: str, token: str) -> Dataset:
        logger.warning("Refused instance %s from %r with status 0x%04X: %s", token, calling, status, reason)
        response = Dataset()
        response.Status = status
        response.ErrorComment = reason[:64]
        return response


def _reject(assoc: Any, reason: tuple[int, int, int]) -> None:
    """Send A-ASSOCIATE-RJ and wait until it is on the wire before the socket closes
    (as pynetdicom does for its own rejections)."""
    assoc.acse.send_reject(*reason)
    assoc.kill()


class _Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _check_structure_or_discard(data_set: memoryview, transfer_syntax_uid: str, staged: StagedWrite) -> DataSetStructure:
    """The structure of the received data set (:func:`~dicom_node.structure.check_structure`);
    a damaged one's staged file is discarded before the error propagates."""
    try:
        return check_structure(data_set, transfer_syntax_uid)
    except BaseException:
        staged.discard()
        raise


def _read_header_checked(
    data_set: Any, transfer_syntax_uid: str, sop_class_uid: str, sop_instance_uid: str
) -> tuple[Dataset, str, str]:
    """The header, Study and Series Instance UIDs of a received data set that agrees
    with its C-STORE request; raises :class:`_Refusal` with the status to answer."""
    try:
        header = read_header(data_set, transfer_syntax_uid)
        study_uid = _uid_attribute(header, "StudyInstanceUID")
        series_uid = _uid_attribute(header, "SeriesInstanceUID")
        dataset_sop_instance = _uid_attribute(header, "SOPInstanceUID")
        dataset_sop_class = _uid_attribute(header, "SOPClassUID")
    except InvalidInstanceError as exc:
        raise _Refusal(StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is "cannot understand"
        raise _Refusal(StoreStatus.CANNOT_UNDERSTAND, f"data set could not be parsed ({type(exc).__name__})") from None
    if dataset_sop_instance != sop_instance_uid or dataset_sop_class != sop_class_uid:
        raise _Refusal(
            StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            "SOP Class/Instance UID in the data set differ from the C-STORE request",
        )
    return header, study_uid, series_uid


def _uid_attribute(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    if value is None or str(value) == "":
        raise InvalidInstanceError(f"{keyword} is missing")
    value = str(value)
    if not is_valid_uid(value):
        raise InvalidInstanceError(f"{keyword} is not a valid DICOM UID")
    return value
