"""The audit trail of one process: messages recorded without waiting, sent by a thread,
buffered on disk while the audit repository is down.

:meth:`AuditTrail.record` never blocks and never raises: imaging work goes on whatever
happens to the audit repository. A sender thread hands each message to the transport; when
that fails, the message and every later one go to the :class:`~worklist.atna.spool.Spool`,
which is sent again, oldest first, every ``retry_seconds`` until the repository takes it.
Messages lost on the way (the in-memory queue full, the spool full or not writable) are
counted in ``radground_audit_messages_dropped_total`` and logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from worklist.atna.events import NodeIdentity
from worklist.atna.messages import AuditMessage
from worklist.atna.spool import Spool
from worklist.atna.syslog import AuditTransport, AuditTransportError, syslog_message

__all__ = ["MESSAGES_DROPPED", "AuditTrail"]

logger = logging.getLogger(__name__)

MESSAGES_DROPPED = Counter(
    "radground_audit_messages_dropped",
    "Audit messages lost before reaching the audit repository or file, by reason "
    "(queue_full, spool_full, spool_error, build_error).",
    ["reason"],
)

_STOP = object()


class AuditTrail:
    """Sends this process's audit messages through ``transport``.

    Parameters
    ----------
    transport
        Syslog over TLS or UDP, or the local audit file (:mod:`worklist.atna.syslog`).
    node
        This node as the messages name it.
    spool
        Where messages wait while the transport fails.
    retry_seconds
        How long after a failure the spool is tried again.
    queue_size
        Messages held in memory before the sender takes them (more are dropped, counted).
    """

    def __init__(
        self, transport: AuditTransport, *, node: NodeIdentity, spool: Spool,
        retry_seconds: float = 10.0, queue_size: int = 10_000,
    ) -> None:
        self.transport = transport
        self.node = node
        self.spool = spool
        self.retry_seconds = retry_seconds
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._failed_at: float | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="audit-sender", daemon=True)
        self._thread.start()

    # -- recording -----------------------------------------------------------

    def record(self, message: AuditMessage) -> None:
        """Queue ``message`` for the audit repository (never blocks, never raises)."""
        try:
            payload = syslog_message(
                message.to_xml(), hostname=self.node.host, proc_id=self.node.process_id
            )
        except Exception as exc:  # noqa: BLE001 - auditing never stops the work it audits
            self._dropped("build_error", f"could not be written ({type(exc).__name__})")
            return
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self._dropped("queue_full", "the sender is behind")
            return
        self._idle.clear()  # after the put: a sender that took it already sets it again later

    def event(self, builder: Callable[..., AuditMessage], /, **facts: Any) -> None:
        """Build a message with ``builder(self.node, **facts)`` (a function of
        :mod:`worklist.atna.events`) and record it; never raises."""
        try:
            message = builder(self.node, **facts)
        except Exception as exc:  # noqa: BLE001 - auditing never stops the work it audits
            self._dropped("build_error", f"could not be built ({type(exc).__name__})")
            return
        self.record(message)

    @staticmethod
    def _dropped(reason: str, why: str, count: int = 1) -> None:
        MESSAGES_DROPPED.labels(reason).inc(count)
        logger.error("%d audit message(s) dropped: %s (%s)", count, why, reason)

    # -- sending -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if self._spool_due():
                self._send_spooled()
            try:
                item = self._queue.get(timeout=self._wait_seconds())
            except queue.Empty:
                if self._failed_at is None and not len(self.spool):
                    self._idle.set()
                continue
            if item is _STOP:
                return
            if self._failed_at is None and not len(self.spool):
                try:
                    self.transport.send(item)
                    continue
                except AuditTransportError as exc:
                    self._failed(exc)
            self._keep(item)

    def _wait_seconds(self) -> float:
        if self._failed_at is None:
            return 0.5
        return max(0.05, self._failed_at + self.retry_seconds - time.monotonic())

    def _spool_due(self) -> bool:
        if self._failed_at is not None:
            return time.monotonic() >= self._failed_at + self.retry_seconds
        return self._queue.empty() and bool(len(self.spool))

    def _send_spooled(self) -> None:
        sent = 0
        for claim, payload in self.spool.claimed():
            try:
                self.transport.send(payload)
            except AuditTransportError as exc:
                self.spool.release(claim)
                self._failed(exc)
                return
            self.spool.done(claim)
            sent += 1
        if self._failed_at is not None or sent:
            logger.info("Audit repository reachable again: %d buffered message(s) sent", sent)
        self._failed_at = None

    def _failed(self, exc: AuditTransportError) -> None:
        if self._failed_at is None:
            logger.warning("Audit messages are buffered on disk until the repository is back: "
                           "%s", exc)
        self._failed_at = time.monotonic()

    def _keep(self, payload: bytes) -> None:
        try:
            dropped = self.spool.add(payload)
        except OSError as exc:
            self._dropped("spool_error", f"the spool is not writable ({exc.strerror})")
            return
        if dropped:
            self._dropped("spool_full", f"the spool holds {self.spool.max_messages}", dropped)

    # -- life cycle ----------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every recorded message was sent (``True``) or ``timeout`` seconds passed
        with some still queued or spooled (``False``)."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send what can be sent within ``timeout``, spool the rest, stop the sender."""
        self.flush(timeout)
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:  # the sender is stuck on the repository: it is left behind
            pass
        self._thread.join(timeout)
        while True:  # what the sender did not take waits in the spool for the next start
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._keep(item)
        self.transport.close()
