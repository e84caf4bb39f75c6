"""Prometheus metrics of the DICOM node: instances, bytes and associations.

Module-level :mod:`prometheus_client` objects, counted where things happen:
instances in the one ingest path (:mod:`dicom_node.ingest`: C-STORE and
STOW-RS), associations in the SCP's admission (:mod:`dicom_node.scp`). The
package reads no settings: whether the values live in this process or in
per-process files that one exposition sums (``PROMETHEUS_MULTIPROC_DIR``,
multi-process mode) is decided by the application before it imports this
module. Labels carry no patient data: calling AE titles (bounded: see
:data:`MAX_CALLING_AE_LABELS`), C-STORE status names and refusal reasons.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge

from dicom_node.conformance import StoreStatus

__all__ = [
    "ASSOCIATIONS_ACCEPTED",
    "ASSOCIATIONS_OPEN",
    "ASSOCIATIONS_REFUSED",
    "ASSOCIATION_REFUSAL_REASONS",
    "BYTES_RECEIVED",
    "INSTANCES_RECEIVED",
    "INSTANCES_REFUSED",
    "MAX_CALLING_AE_LABELS",
    "OTHER_CALLING_AE",
    "association_closed",
    "association_opened",
    "association_refused",
    "instance_refused",
    "instance_stored",
    "refusal_reason",
]

#: Distinct calling AE titles one process labels; later ones are counted as
#: :data:`OTHER_CALLING_AE` (a node open to any AE title must not grow a series per caller).
MAX_CALLING_AE_LABELS = 64
OTHER_CALLING_AE = "other"

INSTANCES_RECEIVED = Counter(
    "radground_instances_received",
    "Instances stored and answered Success (C-STORE or STOW-RS), by calling AE title (the "
    "account's name for STOW-RS).",
    ["calling_ae"],
)
BYTES_RECEIVED = Counter(
    "radground_received_bytes",
    "Bytes of the stored instances (the Part 10 file: preamble, file meta and the data set as "
    "received), by calling AE title.",
    ["calling_ae"],
)
INSTANCES_REFUSED = Counter(
    "radground_instances_refused",
    "C-STORE requests answered with a failure status, by status (dicom_node.conformance."
    "StoreStatus, lower case).",
    ["reason"],
)
ASSOCIATIONS_OPEN = Gauge(
    "radground_associations_open",
    "Associations accepted and not yet closed (summed over the live listener processes).",
    multiprocess_mode="livesum",
)
ASSOCIATIONS_ACCEPTED = Counter(
    "radground_associations_accepted",
    "Associations accepted.",
)
ASSOCIATIONS_REFUSED = Counter(
    "radground_associations_refused",
    "Connections and association requests refused, by reason.",
    ["reason"],
)

#: Why an association is refused: the ``reason`` label of :data:`ASSOCIATIONS_REFUSED`.
ASSOCIATION_REFUSAL_REASONS = frozenset({
    "calling_ae_not_allowed",  # not among the allowed peers (AE title, host)
    "called_ae_mismatch",  # addressed to another AE title
    "association_limit",  # node.max_associations reached
    "peer_connection_limit",  # node.max_connections_per_peer reached (refused at accept)
})

_STATUS_NAMES: dict[int, str] = {
    value: name.lower()
    for name, value in vars(StoreStatus).items()
    if name.isupper() and isinstance(value, int) and value != StoreStatus.SUCCESS
}

# Every reason starts at 0, so rate() sees the first refusal.
_REFUSED = {status: INSTANCES_REFUSED.labels(reason) for status, reason in _STATUS_NAMES.items()}
_ASSOCIATIONS_REFUSED = {
    reason: ASSOCIATIONS_REFUSED.labels(reason) for reason in ASSOCIATION_REFUSAL_REASONS
}

_by_calling_ae: dict[str, tuple[Counter, Counter]] = {}
_by_calling_ae_lock = threading.Lock()


def refusal_reason(status: int) -> str:
    """The ``reason`` label of a C-STORE failure status (``"status_0xNNNN"`` when unnamed)."""
    return _STATUS_NAMES.get(status, f"status_0x{status:04x}")


def _received_counters(calling_ae: str) -> tuple[Counter, Counter]:
    counters = _by_calling_ae.get(calling_ae)
    if counters is not None:
        return counters
    with _by_calling_ae_lock:
        counters = _by_calling_ae.get(calling_ae)
        if counters is None:
            label = calling_ae.strip() or "-"
            if len(_by_calling_ae) >= MAX_CALLING_AE_LABELS:
                label = OTHER_CALLING_AE
            counters = (INSTANCES_RECEIVED.labels(label), BYTES_RECEIVED.labels(label))
            if len(_by_calling_ae) < 4 * MAX_CALLING_AE_LABELS:  # the lookup table is bounded too
                _by_calling_ae[calling_ae] = counters
        return counters


def instance_stored(calling_ae: str, size: int) -> None:
    """Count one instance stored and answered Success; ``size`` in bytes."""
    instances, received_bytes = _received_counters(calling_ae)
    instances.inc()
    received_bytes.inc(size)


def instance_refused(status: int) -> None:
    """Count one C-STORE request answered with the failure ``status``."""
    counter = _REFUSED.get(status)
    if counter is None:
        counter = INSTANCES_REFUSED.labels(refusal_reason(status))
    counter.inc()


def association_opened() -> None:
    """An association was accepted."""
    ASSOCIATIONS_ACCEPTED.inc()
    ASSOCIATIONS_OPEN.inc()


def association_closed() -> None:
    """An accepted association ended."""
    ASSOCIATIONS_OPEN.dec()


def association_refused(reason: str) -> None:
    """A connection or association request was refused; ``reason`` is one of
    :data:`ASSOCIATION_REFUSAL_REASONS`."""
    _ASSOCIATIONS_REFUSED[reason].inc()
