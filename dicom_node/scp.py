"""The Storage SCP: C-ECHO and C-STORE, admission control, durable storage.

The SCP is deliberately thin (STYLE.md §5): handlers are declared in one place
and return DICOM statuses; no pixel decoding and no slow work on the
association thread. Each received data set goes to the one ingest path
(:class:`dicom_node.ingest.InstanceIngest`, shared with STOW-RS): stored
exactly as it arrived (:mod:`dicom_node.storage`) once its structure is checked
(:mod:`dicom_node.structure`: every length and delimiter, the Pixel Data's
size; a damaged data set is refused and leaves nothing behind), and the
caller's ``on_stored`` hook is told about each instance; the node knows
nothing of databases or queues.

Admission: the node accepts on its own listening socket
(:mod:`dicom_node.listening`), caps connections per peer address at accept
(before any thread serves them), gives every connection the network timeout
and ``TCP_NODELAY``, then checks calling/called AE titles and the association
limit on the A-ASSOCIATE-RQ.

pynetdicom internals, each switchable (``pynetdicom_patches``,
:mod:`dicom_node.patches`, docs/third-party-patches.md): every PDU is read
bounded and with a deadline, with quick ACKs (:mod:`dicom_node.sockets`), the
association threads wait for events instead of polling
(:mod:`dicom_node.reactors`), and C-STORE command sets are read and written
directly (:mod:`dicom_node.store_fastpath`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node import metrics
from dicom_node.associations import AssociationEnded, AssociationRefused, ReceivedInstance
from dicom_node.conformance import StoreStatus, contexts_preferring_requestor, scp_contexts
from dicom_node.ingest import InstanceIngest, StoredInstance
from dicom_node.patches import (
    EVENT_REACTORS,
    PDU_LIMITS,
    PYNETDICOM_PATCHES,
    QUICK_ACK,
    STORE_FAST_PATH,
    check_pynetdicom_internals,
)
from dicom_node.reactors import make_event_driven
from dicom_node.sockets import guard_association_socket
from dicom_node.storage import InstanceStore
from dicom_node.store_fastpath import use_store_fast_path

__all__ = [
    "AllowedPeer",
    "AssociationLimiter",
    "PeerConnectionLimiter",
    "StorageSCP",
    "StoredInstance",
    "ThreadAssociationLimiter",
]

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (PS3.8 §9.3.4): result, source, diagnostic.
# Sent before the request is read to a peer over its connection cap: transient, service
# provider (presentation), local limit exceeded.
_A_ASSOCIATE_RJ_LIMIT = bytes([0x03, 0x00, 0, 0, 0, 4, 0x00, 0x02, 0x03, 0x02])
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
_REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service user, called AE title not recognised
# transient, service provider (presentation), local limit exceeded
_REJECT_LIMIT = (0x02, 0x03, 0x02)

@dataclass(frozen=True)
class AllowedPeer:
    """A calling AE title allowed to send, optionally only from one host (IP address)."""

    ae_title: str
    host: str | None = None

    def __post_init__(self) -> None:
        if not self.ae_title.strip() or len(self.ae_title) > 16:
            raise ValueError(f"AE title must be 1-16 characters, got {self.ae_title!r}")

    def matches(self, ae_title: str, host: str) -> bool:
        return self.ae_title.strip() == ae_title.strip() and (
            self.host is None or self.host == host
        )


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


class PeerConnectionLimiter:
    """Caps concurrent connections per peer address, shared by the node's listener processes.

    Counts live in shared memory, one slot per hash of the address
    (``counts``: a ``multiprocessing`` ``Array("i", n)``, made by
    :meth:`shared_counts` in the node process and handed to its listeners);
    two addresses that share a slot share its cap, which only errs towards
    refusing.
    """

    SLOTS = 4096

    def __init__(self, maximum: int, *, counts: Any = None) -> None:
        if maximum < 1:
            raise ValueError(f"maximum connections per peer must be >= 1, got {maximum}")
        self.maximum = maximum
        self._counts = counts if counts is not None else self.shared_counts()

    @classmethod
    def shared_counts(cls, context: Any = multiprocessing) -> Any:
        """Zeroed counters in shared memory, for :class:`PeerConnectionLimiter` in several
        processes."""
        return context.Array("i", cls.SLOTS)

    def _slot(self, host: str) -> int:
        return zlib.crc32(host.encode()) % len(self._counts)

    def try_acquire(self, host: str) -> bool:
        """Count a new connection from ``host``; ``False`` (nothing counted) when it is at its
        cap."""
        slot = self._slot(host)
        with self._counts.get_lock():
            if self._counts[slot] >= self.maximum:
                return False
            self._counts[slot] += 1
            return True

    def release(self, host: str) -> None:
        """A connection from ``host`` closed."""
        slot = self._slot(host)
        with self._counts.get_lock():
            if self._counts[slot] > 0:
                self._counts[slot] -= 1


class _NodeRequestHandler(RequestHandler):
    server: _NodeServer

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        patches = self.server.patches
        if PDU_LIMITS in patches:
            guard_association_socket(assoc, quick_ack=QUICK_ACK in patches)
        if EVENT_REACTORS in patches:
            make_event_driven(assoc)
        if STORE_FAST_PATH in patches:
            use_store_fast_path(assoc)
        _release_peer_slot_when_done(assoc, self.server.peer_limiter, str(self.client_address[0]))
        return assoc


def _release_peer_slot_when_done(assoc: Any, limiter: PeerConnectionLimiter, host: str) -> None:
    """Hold the connection's per-peer slot until its association thread ends, not just until
    its socket closes: a connection closed before its A-ASSOCIATE-RQ arrived (refused PDU,
    stalled header) keeps pynetdicom's thread waiting up to the ACSE timeout, and the cap is
    what bounds those threads per peer."""
    run = assoc.run

    def run_then_release() -> None:
        try:
            run()
        finally:
            limiter.release(host)

    assoc.run = run_then_release  # threading.Thread.start() calls self.run()


class _NodeServer(ThreadedAssociationServer):
    """pynetdicom's threaded server on a listening socket the node owns, with admission per peer.

    ``listening_socket`` is the node's own bound, listening socket
    (:func:`dicom_node.listening.bind_listening_socket`), shared by its
    listener processes; without one the server binds ``address`` itself, also
    without ``SO_REUSEPORT``. Each accepted connection gets the network
    timeout on every read and write and ``TCP_NODELAY``, and counts against
    its peer address's connection cap before any thread serves it.
    """

    def __init__(
        self,
        *args: Any,
        listening_socket: socket.socket | None = None,
        peer_limiter: PeerConnectionLimiter,
        patches: frozenset[str],
        **kwargs: Any,
    ) -> None:
        self._listening_socket = listening_socket
        self.peer_limiter = peer_limiter
        self.patches = patches
        kwargs["request_handler"] = _NodeRequestHandler
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self._listening_socket is None:
            super().server_bind()
            return
        if self.socket is not None:
            self.socket.close()  # the one socketserver made; the node's own replaces it
        self.socket = self._listening_socket
        # Shared with the node's other listener processes: accept() must not block
        # when another process took the connection first.
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self._listening_socket is None:
            super().server_activate()

    def server_close(self) -> None:
        if self._listening_socket is None:
            super().server_close()
        # no shutdown(): the node's other listener processes still accept on it
        elif self.socket is not None:
            self.socket.close()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """socketserver's admission hook: the per-peer connection cap, then socket options."""
        host = str(client_address[0])
        if not self.peer_limiter.try_acquire(host):
            logger.warning(
                "Refused a connection from %s: it already holds %d connections "
                "(node.max_connections_per_peer)",
                host,
                self.peer_limiter.maximum,
            )
            metrics.association_refused("peer_connection_limit")
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(_A_ASSOCIATE_RJ_LIMIT)
            return False
        try:
            request.settimeout(self.ae.network_timeout)
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # closed already: the association reports it
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """The connection failed before it became an association: its peer slot is free again."""
        super().handle_error(request, client_address)
        self.peer_limiter.release(str(client_address[0]))


class StorageSCP:
    """A Storage SCP (PS3.4 Annex B) with Verification (Annex A).

    Parameters
    ----------
    store
        Where received instances are written.
    ae_title
        This node's AE title.
    on_stored
        Called on the association thread for each instance stored, before
        Success; must be quick (an index insert). Refusals as
        :class:`~dicom_node.ingest.InstanceIngest` describes them.
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
    peer_limiter
        Caps concurrent connections per peer address, counted when the TCP
        connection is accepted (default: 8 per address in this process).
    pynetdicom_patches
        Which of RadGround's patches of pynetdicom internals to use
        (:mod:`dicom_node.patches`; default all, empty = pynetdicom's stock
        path). Checked against the installed pynetdicom here.
    verify_structure
        Check each data set's structure before Success
        (:func:`~dicom_node.structure.check_structure`); False only to measure
        what the check costs (``bench/ingest.py --structure-check``).
    on_association_refused, on_association_ended
        Told of each association refused at admission, and of each association
        that stored instances when it closes (:mod:`dicom_node.associations`:
        the audit trail); called on association threads, must be quick and
        must not raise.
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
        peer_limiter: PeerConnectionLimiter | None = None,
        pynetdicom_patches: Iterable[str] = PYNETDICOM_PATCHES,
        verify_structure: bool = True,
        on_association_refused: Callable[[AssociationRefused], None] | None = None,
        on_association_ended: Callable[[AssociationEnded], None] | None = None,
    ) -> None:
        self.pynetdicom_patches = frozenset(pynetdicom_patches)
        check_pynetdicom_internals(self.pynetdicom_patches)
        # pynetdicom's documented switch: no handlers that log message contents (patient data).
        _config.LOG_HANDLER_LEVEL = "none"
        self.peer_limiter = peer_limiter or PeerConnectionLimiter(8)
        self.ae_title = ae_title
        self.allowed_peers = tuple(allowed_peers)
        self.require_called_ae_title = require_called_ae_title
        self.limiter = limiter or ThreadAssociationLimiter(10)
        self.on_association_refused = on_association_refused
        self.on_association_ended = on_association_ended
        self._received: dict[int, list[ReceivedInstance]] = {}
        self._stored_here = threading.local()  # the instance the ingest just stored, per thread
        #: Where received instances are written.
        self.store = store
        self._ae = AE(ae_title=ae_title)
        #: The one ingest path received instances take (shared with STOW-RS).
        self.ingest = InstanceIngest(
            store,
            implementation_class_uid=self._ae.implementation_class_uid,
            implementation_version_name=self._ae.implementation_version_name or "",
            on_stored=self._stored_hook(on_stored),
            verify_structure=verify_structure,
        )
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
        self._stop_lock = threading.Lock()

    @property
    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        """The event handlers, declared in one place."""
        return [
            (evt.EVT_REQUESTED, self._handle_requested),
            (evt.EVT_CONN_CLOSE, self._handle_conn_close),
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_C_STORE, self._handle_store),
        ]

    def start(
        self, host: str, port: int, *, listening_socket: socket.socket | None = None
    ) -> tuple[str, int]:
        """Start listening in background threads; returns the bound (host, port).

        ``listening_socket``: the node's own listening socket (bound and
        listening, :func:`dicom_node.listening.bind_listening_socket`) to
        accept on, shared with its other listener processes; without it the
        SCP binds ``(host, port)`` itself (``port=0``: an ephemeral port, tests).
        """
        server = cast(_NodeServer, self._ae.make_server(
            (host, port), evt_handlers=cast(Any, self.handlers), server_class=_NodeServer,
            listening_socket=listening_socket, peer_limiter=self.peer_limiter,
            patches=self.pynetdicom_patches,
        ))
        self._server = server
        self._ae._servers.append(server)  # as AE.start_server does, so AE.shutdown stops it
        threading.Thread(
            target=server.serve_forever, name=f"StorageSCP:{port}", daemon=True
        ).start()
        bound = server.server_address
        logger.info("Storage SCP %s listening on %s:%s", self.ae_title, bound[0], bound[1])
        return bound[0], bound[1]

    def serve_forever(
        self, host: str, port: int, *, listening_socket: socket.socket | None = None
    ) -> None:
        """Listen in the calling thread until :meth:`stop` is called from another thread."""
        self.start(host, port, listening_socket=listening_socket)
        self._stopped.wait()

    def stop(self) -> None:
        """Stop listening and abort running associations; later calls do nothing.

        Safe to call from several threads at once (a signal handler and the
        parent watch can both ask): pynetdicom's ``AE.shutdown`` is not.
        """
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._ae.shutdown()
            self._server = None
            self._stopped.set()

    # -- handlers ---------------------------------------------------------

    def _handle_requested(self, event: evt.Event) -> None:
        """Admission control: calling AE (and host), called AE, association limit."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        assert request is not None  # EVT_REQUESTED fires with the A-ASSOCIATE request
        calling = request.calling_ae_title
        called = request.called_ae_title
        host = assoc.requestor.address
        if self.allowed_peers and not any(p.matches(calling, host) for p in self.allowed_peers):
            logger.warning(
                "Rejected association from %r at %s: calling AE title not allowed", calling, host
            )
            metrics.association_refused("calling_ae_not_allowed")
            self._refused(request, host, "calling AE title not allowed")
            _reject(assoc, _REJECT_CALLING_AE)
            return
        if self.require_called_ae_title and called.strip() != self.ae_title.strip():
            logger.warning(
                "Rejected association from %r at %s: called AE title %r is not %r",
                calling, host, called, self.ae_title,
            )
            metrics.association_refused("called_ae_mismatch")
            self._refused(request, host, "called AE title not this node's")
            _reject(assoc, _REJECT_CALLED_AE)
            return
        if not self.limiter.try_acquire():
            logger.warning(
                "Rejected association from %r at %s: maximum concurrent associations reached",
                calling,
                host,
            )
            metrics.association_refused("association_limit")
            self._refused(request, host, "maximum concurrent associations reached")
            _reject(assoc, _REJECT_LIMIT)
            return
        with self._slots_lock:
            self._slots.add(id(assoc))
        metrics.association_opened()
        assoc.acceptor.supported_contexts = contexts_preferring_requestor(
            request.presentation_context_definition_list
        )

    def _refused(self, request: Any, host: str, reason: str) -> None:
        if self.on_association_refused is not None:
            self.on_association_refused(AssociationRefused(
                calling_ae_title=request.calling_ae_title, called_ae_title=request.called_ae_title,
                peer_host=host, reason=reason, at=datetime.now(UTC),
            ))

    def _stored_hook(
        self, on_stored: Callable[[StoredInstance], None] | None
    ) -> Callable[[StoredInstance], None] | None:
        """``on_stored``, first noting the instance for this association's audit record."""
        def stored(instance: StoredInstance) -> None:
            self._stored_here.instance = instance
            if on_stored is not None:
                on_stored(instance)

        return stored if self.on_association_ended is not None else on_stored

    def _handle_conn_close(self, event: evt.Event) -> None:
        with self._slots_lock:
            held = id(event.assoc) in self._slots
            self._slots.discard(id(event.assoc))
            received = self._received.pop(id(event.assoc), None)
        if held:
            self.limiter.release()
            metrics.association_closed()
        if received and self.on_association_ended is not None:
            assoc = event.assoc
            self.on_association_ended(AssociationEnded(
                calling_ae_title=assoc.requestor.ae_title, called_ae_title=assoc.acceptor.ae_title,
                peer_host=assoc.requestor.address, instances=tuple(received),
                at=datetime.now(UTC),
            ))

    def _handle_echo(self, event: evt.Event) -> int:
        return StoreStatus.SUCCESS

    def _handle_store(self, event: evt.Event) -> int | Dataset:
        """C-STORE: the request's data set and UIDs to the one ingest path
        (:class:`~dicom_node.ingest.InstanceIngest`), its result as the status."""
        assoc = event.assoc
        calling = assoc.requestor.ae_title
        request = cast(C_STORE, event.request)
        received = request.DataSet
        # PS3.7 9.3.1.1: a C-STORE-RQ carries a data set; refuse one that does not
        if received is None:
            logger.warning(
                "Refused instance - from %r with status 0x%04X: C-STORE request without a "
                "data set", calling, StoreStatus.CANNOT_UNDERSTAND,
            )
            metrics.instance_refused(StoreStatus.CANNOT_UNDERSTAND)
            return _response(StoreStatus.CANNOT_UNDERSTAND, "C-STORE request without a data set")
        self._stored_here.instance = None
        result = self.ingest.ingest(
            received,
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            calling_ae_title=calling,
            peer_host=assoc.requestor.address,
        )
        stored = self._stored_here.instance
        if result.stored and stored is not None:  # noted only with on_association_ended
            with self._slots_lock:
                self._received.setdefault(id(assoc), []).append(ReceivedInstance.from_header(
                    stored.header, study_instance_uid=stored.study_instance_uid,
                    sop_class_uid=stored.sop_class_uid,
                ))
        if result.reason is None:
            return result.status
        return _response(result.status, result.reason)


def _response(status: int, reason: str) -> Dataset:
    """A C-STORE response's status with the reason as its Error Comment (0000,0902; 64 chars)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = reason[:64]
    return response


def _reject(assoc: Any, reason: tuple[int, int, int]) -> None:
    """Send A-ASSOCIATE-RJ and wait until it is on the wire before the socket closes
    (as pynetdicom does for its own rejections)."""
    assoc.acse.send_reject(*reason)
    assoc.kill()
