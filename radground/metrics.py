"""Prometheus multi-process mode for the node's process tree.

The listener processes, the Celery worker processes and the web process each
count their own metrics (``dicom_node.metrics``, ``worklist.metrics``,
``engine.metrics``); :mod:`prometheus_client` keeps each process's values in a
file of one directory, ``<web.state_dir>/metrics``, and ``/metrics`` sums them
(``web.health``). That mode is chosen once per process, from
``PROMETHEUS_MULTIPROC_DIR``, when a metric is created, so the command that
starts the tree calls :func:`use_metrics_directory` before it imports any
package that defines metrics and before it starts a child (children inherit the
environment). The node clears the directory when it starts (stale files of an
earlier run); the supervisor tells it when a child is gone
(:func:`process_gone`), so live gauges (open associations) drop that child's
values.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = [
    "MULTIPROCESS_ENVIRONMENT",
    "active_metrics_directory",
    "metrics_directory",
    "process_gone",
    "use_metrics_directory",
]

MULTIPROCESS_ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"

#: Our modules that create metrics when imported.
_METRICS_MODULES = ("dicom_node.metrics", "engine.metrics", "worklist.metrics")


def metrics_directory(state_dir: Path) -> Path:
    """Where the processes' metric files live, under the web state directory."""
    return Path(state_dir).absolute() / "metrics"


def use_metrics_directory(directory: Path, *, clear: bool) -> Path:
    """Put this process, and the children it starts from now on, in multi-process mode
    with their metric files in ``directory`` (created ``0700``).

    ``clear``: remove the files of an earlier run (the node at start). Returns the directory.

    Raises
    ------
    RuntimeError
        A module of ours that defines metrics was imported already: its values would stay
        in this process and never reach ``/metrics``.
    """
    early = [name for name in _METRICS_MODULES if name in sys.modules]
    if early and os.environ.get(MULTIPROCESS_ENVIRONMENT) != str(directory):
        raise RuntimeError(
            f"{', '.join(early)} imported before the metrics directory was set up; "
            "call use_metrics_directory first"
        )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if clear:
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
    os.environ[MULTIPROCESS_ENVIRONMENT] = str(directory)
    if "prometheus_client.values" in sys.modules:  # imported by a library before us
        from prometheus_client import values

        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()
    return directory


def process_gone(pid: int) -> None:
    """A child that counted metrics exited: its live gauges no longer count."""
    if os.environ.get(MULTIPROCESS_ENVIRONMENT):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def active_metrics_directory() -> Path | None:
    """The directory this process counts its metrics in, or ``None`` when it counts them in
    memory (for ``WebContext.metrics_directory``)."""
    value = os.environ.get(MULTIPROCESS_ENVIRONMENT)
    return Path(value) if value else None
