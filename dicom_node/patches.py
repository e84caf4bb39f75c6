"""RadGround's patches of pynetdicom internals: their names and what each relies on.

Each patch is named in ``node.pynetdicom_patches`` (all by default; an empty
list runs pynetdicom's stock path). Why each exists, what it measured and
what upstream change would retire it: ``docs/third-party-patches.md``.

:func:`check_pynetdicom_internals` checks that the installed pynetdicom still
has every attribute and method signature the enabled patches rely on; the
node calls it before it listens, and the test suite calls it for every patch,
so an upgrade that removes one fails loudly instead of silently falling back.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from dicom_node.errors import DicomNodeError

__all__ = [
    "EVENT_REACTORS",
    "PDU_LIMITS",
    "PYNETDICOM_PATCHES",
    "QUICK_ACK",
    "SCU_RESPONSE_ORDER",
    "STORE_FAST_PATH",
    "PynetdicomInternalsChanged",
    "check_pynetdicom_internals",
]

PDU_LIMITS = "pdu-limits"
"""Bounded PDU lengths and per-PDU read deadlines (:class:`dicom_node.sockets.GuardedSocket`)."""
QUICK_ACK = "quick-ack"
"""Re-arm TCP_QUICKACK after every read (:class:`dicom_node.sockets.QuickAckSocket`); needs pdu-limits."""
EVENT_REACTORS = "event-reactors"
"""DUL and association threads wait for events instead of polling (:mod:`dicom_node.reactors`)."""
STORE_FAST_PATH = "store-fast-path"
"""C-STORE command sets read and written directly (:mod:`dicom_node.store_fastpath`)."""
SCU_RESPONSE_ORDER = "scu-response-order"
"""The SCU's reactor never takes a response meant for the sender (:class:`dicom_node.scu._RequestorDIMSE`)."""

PYNETDICOM_PATCHES = (PDU_LIMITS, QUICK_ACK, EVENT_REACTORS, STORE_FAST_PATH, SCU_RESPONSE_ORDER)


class PynetdicomInternalsChanged(DicomNodeError, RuntimeError):
    """The installed pynetdicom lacks an internal that an enabled patch relies on."""


def _needs(owner: object, name: str, *, parameters: tuple[str, ...] | None = None,
           source_has: tuple[str, ...] = ()) -> str | None:
    """Why ``owner.name`` is not what a patch relies on, or ``None`` when it is."""
    label = f"{getattr(owner, '__module__', '')}.{getattr(owner, '__qualname__', owner)}.{name}"
    member = inspect.getattr_static(owner, name, None)
    if member is None:
        return f"{label} is missing"
    if parameters is not None:
        try:
            found = tuple(inspect.signature(getattr(owner, name)).parameters)
        except (TypeError, ValueError):
            return f"{label} has no inspectable signature"
        if found != parameters:
            return f"{label} takes {found}, the patch relies on {parameters}"
    if source_has:
        source = inspect.getsource(getattr(owner, name))
        for fragment in source_has:
            if fragment not in source:
                return f"{label} no longer contains {fragment!r}"
    return None


def _instance_attributes(owner: type, names: Iterable[str], method: str = "__init__") -> list[str]:
    """Attributes the patches read that ``owner`` sets in ``method`` (checked in its source)."""
    source = inspect.getsource(getattr(owner, method))
    return [f"{owner.__module__}.{owner.__qualname__} no longer sets self.{name}"
            for name in names if f"self.{name}" not in source]


def _problems(patch: str) -> list[str]:
    import queue

    from pynetdicom import _config
    from pynetdicom.association import Association
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.transport import AssociationSocket, RequestHandler

    checks: list[str | None] = []
    problems: list[str] = []
    if patch in (PDU_LIMITS, QUICK_ACK):
        checks += [
            _needs(AssociationSocket, "recv", parameters=("self", "nr_bytes")),
            _needs(DULServiceProvider, "_read_pdu_data", parameters=("self",),
                   source_has=("self.socket.recv(6)", "self.socket.recv(pdu_length)",
                               "except (OSError, TimeoutError)")),
            _needs(Association, "is_acceptor"),
            _needs(RequestHandler, "_create_association", parameters=("self",)),
        ]
        checks += [_needs(AssociationSocket, "assoc")]
        problems += _instance_attributes(AssociationSocket, ("socket",))
    elif patch == EVENT_REACTORS:
        checks += [
            _needs(DULServiceProvider, "run_reactor", parameters=("self",)),
            _needs(DULServiceProvider, "_process_recv_primitive", parameters=("self",)),
            _needs(DULServiceProvider, "_is_transport_event", parameters=("self",)),
            _needs(DULServiceProvider, "kill_dul", parameters=("self",)),
            _needs(DULServiceProvider, "stop_dul", parameters=("self",)),
            _needs(DULServiceProvider, "idle_timer_expired", parameters=("self",)),
            _needs(Association, "_run_reactor", parameters=("self",)),
            _needs(Association, "_serve_request", parameters=("self", "msg", "context_id")),
            _needs(Association, "kill", parameters=("self",)),
        ]
        problems += _instance_attributes(DULServiceProvider, (
            "_idle_timer", "artim_timer", "state_machine", "event_queue", "to_provider_queue",
            "to_user_queue", "_kill_thread"))
        problems += _instance_attributes(Association, ("_reactor_checkpoint", "_is_paused", "_kill",
                                                       "_dul_ready"))
    elif patch == STORE_FAST_PATH:
        checks += [
            _needs(DIMSEServiceProvider, "receive_primitive", parameters=("self", "primitive")),
            _needs(DIMSEServiceProvider, "send_msg", parameters=("self", "primitive", "context_id")),
            _needs(DIMSEServiceProvider, "maximum_pdu_size"),
            _needs(DIMSEServiceProvider, "assoc"),
        ]
        store = C_STORE()
        problems += [f"pynetdicom.dimse_primitives.C_STORE no longer has {name}"
                     for name in ("_context_id", "_dataset_path", "_dataset_file") if not hasattr(store, name)]
        if not hasattr(_config, "STORE_RECV_CHUNKED_DATASET"):
            problems.append("pynetdicom._config.STORE_RECV_CHUNKED_DATASET is missing")
        problems += _instance_attributes(DIMSEServiceProvider, ("message", "msg_queue"))
    elif patch == SCU_RESPONSE_ORDER:
        checks += [_needs(DIMSEServiceProvider, "get_msg", parameters=("self", "block"))]
        problems += _instance_attributes(DIMSEServiceProvider, ("msg_queue",))
        if not all(hasattr(queue.Queue(), name) for name in ("mutex", "queue")):
            problems.append("queue.Queue no longer has mutex and queue")
    else:
        raise ValueError(f"unknown pynetdicom patch {patch!r}; known: {', '.join(PYNETDICOM_PATCHES)}")
    return problems + [problem for problem in checks if problem is not None]


def check_pynetdicom_internals(patches: Iterable[str] = PYNETDICOM_PATCHES) -> None:
    """Raise :class:`PynetdicomInternalsChanged` if an enabled patch's internals are gone.

    Raises
    ------
    PynetdicomInternalsChanged
        Naming every missing or changed internal, the patch that needs it, and
        the setting that turns the patch off.
    ValueError
        An unknown patch name.
    """
    import pynetdicom

    problems = [f"{patch}: {problem}" for patch in patches for problem in _problems(patch)]
    if problems:
        raise PynetdicomInternalsChanged(
            f"pynetdicom {pynetdicom.__version__} lacks what RadGround's patches rely on: "
            + "; ".join(problems)
            + ". Remove those patches from node.pynetdicom_patches or install a tested pynetdicom "
            "(see docs/third-party-patches.md)."
        )
