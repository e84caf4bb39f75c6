"""The Storage SCU: send files or data sets to a DICOM peer.

One association per batch (re-opened when a batch needs more than the 128
presentation contexts an association may carry), each instance proposed in
its own transfer syntax (plus the uncompressed ones, for uncompressed data),
never transcoded, and a clear result per instance. Associations read through
:mod:`dicom_node.sockets`: with ``TCP_NODELAY`` and quick ACKs neither side's
Nagle algorithm stalls a C-STORE (into Orthanc, which answers in two writes
with Nagle on: 7.5 ms per small instance instead of 50, ``bench/delivery.py``),
and their reactor thread never takes a response meant for the sender
(:class:`_RequestorDIMSE`).

With ``tls`` the associations are DICOM TLS (PS3.15 B.1/B.9, through
pynetdicom's documented ``tls_args``): the context is limited to the BCP 195
TLS Profile (:func:`dicom_node.tls.restrict_to_bcp195`) and the peer's
certificate is checked for ``server_name`` (default: the destination's host).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_CANCEL
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # (set via globals())
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from dicom_node.patches import (
    PDU_LIMITS,
    PYNETDICOM_PATCHES,
    QUICK_ACK,
    SCU_RESPONSE_ORDER,
    check_pynetdicom_internals,
)
from dicom_node.sockets import guard_association_socket
from dicom_node.tls import restrict_to_bcp195
from dicom_node.uids import short_uid

__all__ = ["Destination", "EchoResult", "SendResult", "StorageSCU"]

logger = logging.getLogger(__name__)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
_MAX_CONTEXTS = 128


@dataclass(frozen=True)
class Destination:
    """A DICOM peer: AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.ae_title.strip() or len(self.ae_title) > 16:
            raise ValueError(f"AE title must be 1-16 characters, got {self.ae_title!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1-65535, got {self.port}")

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AE@host:port`` (e.g. ``ORTHANC@127.0.0.1:4242``)."""
        try:
            ae_title, address = text.split("@", 1)
            host, port = address.rsplit(":", 1)
            return cls(ae_title=ae_title, host=host.strip("[]"), port=int(port))
        except ValueError:
            raise ValueError(f"destination must look like AE@host:port, got {text!r}") from None

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class EchoResult:
    """The outcome of a C-ECHO."""

    ok: bool
    status: int | None
    elapsed_seconds: float
    reason: str = ""


@dataclass(frozen=True)
class SendResult:
    """The outcome of sending one instance.

    ``status`` is the peer's C-STORE status (``None`` when nothing was sent);
    ``reason`` says why in words when it failed.
    """

    source: str
    sop_instance_uid: str | None
    status: int | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and code_to_category(self.status) in (
            STATUS_SUCCESS,
            STATUS_WARNING,
        )


@dataclass
class _Item:
    source: str
    #: What to hand to pynetdicom: a data set, or a file path (read only when sent).
    payload: Dataset | str | None
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    transfer_syntax_uid: str = ""
    error: str = ""


class StorageSCU:
    """Sends instances to a :class:`Destination`.

    Parameters
    ----------
    ae_title
        Our calling AE title.
    acse_timeout, dimse_timeout, network_timeout
        Seconds.
    pynetdicom_patches
        Which of RadGround's patches of pynetdicom internals to use
        (:mod:`dicom_node.patches`: pdu-limits, quick-ack, scu-response-order
        apply here; default all, empty = pynetdicom's stock path).
    tls
        A client :class:`ssl.SSLContext` (trusted CAs, client certificate):
        associate over TLS, limited here to the BCP 195 TLS Profile. None:
        plain TCP.
    server_name
        The name the peer's certificate must carry (checked when the context's
        ``check_hostname`` is on); None: the destination's host.
    """

    def __init__(
        self,
        ae_title: str,
        *,
        acse_timeout: float = 30.0,
        dimse_timeout: float = 60.0,
        network_timeout: float = 60.0,
        pynetdicom_patches: Iterable[str] = PYNETDICOM_PATCHES,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self.ae_title = ae_title
        self._tls = restrict_to_bcp195(tls) if tls is not None else None
        self._server_name = server_name
        self.pynetdicom_patches = frozenset(pynetdicom_patches)
        check_pynetdicom_internals(self.pynetdicom_patches)
        self._timeouts = (acse_timeout, dimse_timeout, network_timeout)

    def _ae(self) -> AE:
        # pynetdicom's documented switch: no logging of message contents
        _config.LOG_HANDLER_LEVEL = "none"
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = self._timeouts
        return ae

    def _associate(self, ae: AE, destination: Destination) -> Any:
        """Request an association with ``destination`` (over TLS when configured)."""
        tls_args = None
        if self._tls is not None:
            tls_args = (self._tls, self._server_name or destination.host)
        return ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                            evt_handlers=self._connection_handlers(), tls_args=tls_args)

    def _failure(self, assoc: object) -> str:
        reason = _association_failure(assoc)
        if self._tls is not None and not getattr(assoc, "is_rejected", False):
            reason += "; over TLS: or the handshake failed (the peer's certificate, ours, the CA)"
        return reason

    def _connection_handlers(self) -> list[Any]:
        """pynetdicom's documented EVT_CONN_OPEN hook: guard the reads from the connection's
        first PDU (the peer's A-ASSOCIATE-AC/RJ) on."""
        if PDU_LIMITS not in self.pynetdicom_patches:
            return []
        quick_ack = QUICK_ACK in self.pynetdicom_patches
        return [
            (
                evt.EVT_CONN_OPEN,
                lambda event: guard_association_socket(event.assoc, quick_ack=quick_ack),
            )
        ]

    def echo(self, destination: Destination) -> EchoResult:
        """Verify the peer with C-ECHO (PS3.4 Annex A)."""
        ae = self._ae()
        ae.add_requested_context(Verification)
        start = time.perf_counter()
        assoc = self._associate(ae, destination)
        if not assoc.is_established:
            return EchoResult(False, None, time.perf_counter() - start, self._failure(assoc))
        _prepare(assoc, self.pynetdicom_patches)
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        elapsed = time.perf_counter() - start
        if not status or "Status" not in status:
            return EchoResult(False, None, elapsed, "no response to C-ECHO (timeout or abort)")
        return EchoResult(status.Status == 0, int(status.Status), elapsed)

    def send(
        self,
        sources: Iterable[str | os.PathLike[str] | Dataset],
        destination: Destination,
        *,
        on_result: Callable[[SendResult], None] | None = None,
    ) -> list[SendResult]:
        """Send files or data sets; one result per source, in order.

        Files that are not DICOM, or lack SOP Class/Instance UIDs, get a
        failed result without stopping the others.
        """
        items = [_load(source) for source in sources]
        results: dict[int, SendResult] = {}

        def record(index: int, result: SendResult) -> None:
            results[index] = result
            if on_result is not None:
                on_result(result)

        pending = []
        for index, item in enumerate(items):
            if item.error:
                record(
                    index, SendResult(item.source, item.sop_instance_uid or None, None, item.error)
                )
            else:
                pending.append(index)
        for batch in _batches(pending, items):
            self._send_batch(batch, items, destination, record)
        return [results[i] for i in range(len(items))]

    def _send_batch(
        self,
        batch: Sequence[int],
        items: Sequence[_Item],
        destination: Destination,
        record: Callable[[int, SendResult], None],
    ) -> None:
        ae = self._ae()
        for cx in _contexts_for(items[i] for i in batch):
            if cx.abstract_syntax is None:  # _contexts_for sets one on each context
                raise RuntimeError("a presentation context without an abstract syntax")
            ae.add_requested_context(cx.abstract_syntax, cx.transfer_syntax)
        assoc = self._associate(ae, destination)
        if not assoc.is_established:
            reason = self._failure(assoc)
            for index in batch:
                record(
                    index,
                    SendResult(items[index].source, items[index].sop_instance_uid, None, reason),
                )
            return
        _prepare(assoc, self.pynetdicom_patches)
        try:
            for index in batch:
                item = items[index]
                if not assoc.is_established:
                    record(
                        index,
                        SendResult(
                            item.source, item.sop_instance_uid, None, "not sent: association lost"
                        ),
                    )
                    continue
                if item.payload is None:  # items that failed to load never reach a batch
                    raise RuntimeError(f"{item.source} has nothing to send")
                try:
                    response = assoc.send_c_store(item.payload)
                except ValueError:
                    # pynetdicom: no accepted presentation context for this SOP class / transfer
                    # syntax
                    record(
                        index,
                        SendResult(item.source, item.sop_instance_uid, None, _context_reason(item)),
                    )
                    continue
                if response is None or "Status" not in response:
                    record(
                        index,
                        SendResult(
                            item.source,
                            item.sop_instance_uid,
                            None,
                            "no response (timeout or abort)",
                        ),
                    )
                    # The peer is gone or hung: what it did with this instance is unknown,
                    # and the rest must not wait a DIMSE timeout each in a dead association.
                    if assoc.is_established:
                        assoc.abort()
                    continue
                status = int(response.Status)
                reason = str(response.get("ErrorComment", "")) if status != 0 else ""
                record(index, SendResult(item.source, item.sop_instance_uid, status, reason))
                logger.debug(
                    "Sent %s to %s: 0x%04X",
                    short_uid(item.sop_instance_uid),
                    destination.ae_title,
                    status,
                )
        finally:
            if assoc.is_established:
                assoc.release()


class _RequestorDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider for an association this node requested, whose
    reactor thread takes only requests off the message queue.

    pynetdicom's ``send_*()`` pause the association's reactor so that it leaves
    the response to them, but the pause has a window: the reactor can pass its
    checkpoint just before the pause, be held up (the GIL, under load) and then
    take the response as if it were a request, which it drops (pynetdicom logs
    "Received unexpected C-STORE service message" at WARNING). The sender waits
    its DIMSE timeout while the peer waits for the next request: with Orthanc,
    a ~30 s stall (Orthanc's ``DicomScpTimeout``) and a retried delivery in
    about every other 100-study burst. Here the non-blocking get, the
    reactor's, leaves responses to the blocking get of the thread that sent
    the request.
    """

    def get_msg(self, block: bool = False) -> tuple[Any, Any]:
        if block:
            return super().get_msg(block=True)
        waiting = self.msg_queue
        with waiting.mutex:
            if not waiting.queue or _is_response(waiting.queue[0][1]):
                return None, None
            return waiting.queue.popleft()


def _is_response(message: Any) -> bool:
    return getattr(message, "MessageIDBeingRespondedTo", None) is not None and not isinstance(
        message, C_CANCEL
    )


def _prepare(assoc: Any, patches: frozenset[str]) -> None:
    """The response-keeping DIMSE provider for an established association (its reads are
    guarded from the connection's start, :meth:`StorageSCU._connection_handlers`)."""
    if SCU_RESPONSE_ORDER in patches and type(assoc.dimse) is DIMSEServiceProvider:
        assoc.dimse.__class__ = _RequestorDIMSE


def _load(source: str | os.PathLike[str] | Dataset) -> _Item:
    payload: Dataset | str
    if isinstance(source, Dataset):
        name = "<dataset>"
        dataset = payload = source
    else:
        name = payload = os.fspath(source)
        try:
            dataset = dcmread(name, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            return _Item(name, None, error=f"not a readable DICOM file ({type(exc).__name__})")
    sop_class = str(dataset.get("SOPClassUID", ""))
    sop_instance = str(dataset.get("SOPInstanceUID", ""))
    meta = getattr(dataset, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not syntax:
        syntax = str(ExplicitVRLittleEndian)
    if not sop_class or not sop_instance:
        return _Item(name, None, error="SOP Class UID or SOP Instance UID missing")
    return _Item(name, payload, sop_class, sop_instance, syntax)


def _proposed_syntaxes(item: _Item) -> tuple[str, ...]:
    syntax = UID(item.transfer_syntax_uid)
    if syntax in _UNCOMPRESSED or syntax == DeflatedExplicitVRLittleEndian:
        return tuple(dict.fromkeys((str(syntax), *map(str, _UNCOMPRESSED))))
    return (str(syntax),)


def _contexts_for(items: Iterable[_Item]) -> list[PresentationContext]:
    merged: dict[str, list[str]] = {}
    for item in items:
        syntaxes = merged.setdefault(item.sop_class_uid, [])
        for syntax in _proposed_syntaxes(item):
            if syntax not in syntaxes:
                syntaxes.append(syntax)
    contexts = []
    for abstract, syntaxes in merged.items():
        # one context per (SOP class, compressed syntax) so the peer may accept each separately
        uncompressed = [s for s in syntaxes if UID(s) in _UNCOMPRESSED]
        compressed = [s for s in syntaxes if UID(s) not in _UNCOMPRESSED]
        for group in ([uncompressed] if uncompressed else []) + [[s] for s in compressed]:
            cx = PresentationContext()
            cx.abstract_syntax = abstract
            cx.transfer_syntax = [*group]
            contexts.append(cx)
    return contexts


def _context_key(item: _Item) -> tuple[str, str]:
    syntax = UID(item.transfer_syntax_uid)
    if syntax in _UNCOMPRESSED or syntax == DeflatedExplicitVRLittleEndian:
        return item.sop_class_uid, "uncompressed"
    return item.sop_class_uid, str(syntax)


def _batches(pending: Sequence[int], items: Sequence[_Item]) -> list[list[int]]:
    """Split into batches whose presentation contexts fit one association."""
    batches: list[list[int]] = []
    current: list[int] = []
    keys: set[tuple[str, str]] = set()
    for index in pending:
        key = _context_key(items[index])
        if key not in keys and len(keys) >= _MAX_CONTEXTS // 2:
            batches.append(current)
            current, keys = [], set()
        keys.add(key)
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _association_failure(assoc: object) -> str:
    if getattr(assoc, "is_rejected", False):
        return "association rejected by the peer (check the AE titles and the peer's allow-list)"
    if getattr(getattr(assoc, "acceptor", None), "primitive", None) is None:
        return "could not connect (is the peer listening on that host and port?)"
    if getattr(assoc, "is_aborted", False):
        return "association aborted (is the peer a DICOM node on that port?)"
    return "could not connect (is the peer listening on that host and port?)"


def _context_reason(item: _Item) -> str:
    return (
        f"the peer accepted no presentation context for SOP class {item.sop_class_uid} "
        f"in transfer syntax {item.transfer_syntax_uid}"
    )
