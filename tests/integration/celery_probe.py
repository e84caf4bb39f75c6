"""A RadGround worker process with one extra task that holds a worker thread.

``python -m tests.integration.celery_probe BROKER_URL [CA_BUNDLE]`` runs a worker for
queue "io" exactly as ``radground worker`` configures it (the app, its task policy,
its command line, the broker's TLS options from ``[workers]`` with ``CA_BUNDLE`` as
``broker_ca_bundle``), plus ``probe.hold``, so that a test can keep a late-acked
task in flight while it takes the broker away. ``RG_PROBE_REMOTE_CONTROL=1`` turns
Celery's remote control back on (the control case of the remote-control test).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from radground.runtime import broker_tls_options
from radground.settings import WorkerSettings
from radground.worker import worker_arguments
from worklist import tasks


def _no_pipeline():
    raise RuntimeError("the probe worker runs no pipeline task")


@tasks.app.task(base=tasks.RadGroundTask, name="probe.hold")
def hold(marker_dir: str, name: str, seconds: float) -> None:
    """Write ``NAME.started``, hold the thread for ``seconds``, write ``NAME.done``."""
    (Path(marker_dir) / f"{name}.started").touch()
    time.sleep(seconds)
    (Path(marker_dir) / f"{name}.done").touch()


if __name__ == "__main__":
    workers = WorkerSettings(
        broker_url=sys.argv[1], broker_ca_bundle=sys.argv[2] if len(sys.argv) > 2 else ""
    )
    tasks.configure(broker_url=workers.broker_url, context_factory=_no_pipeline,
                    broker_use_ssl=broker_tls_options(workers))
    if os.environ.get("RG_PROBE_REMOTE_CONTROL") == "1":
        tasks.app.conf.worker_enable_remote_control = True
    tasks.app.worker_main(worker_arguments(queue="io", concurrency=2, loglevel="INFO"))
