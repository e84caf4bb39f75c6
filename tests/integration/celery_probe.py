"""A RadGround worker process with one extra task that holds a worker thread.

``python -m tests.integration.celery_probe BROKER_URL`` runs a worker for queue
"io" exactly as ``radground worker`` configures it (the app, its task policy,
its command line), plus ``probe.hold``, so that a test can keep a late-acked
task in flight while it takes the broker away.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

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
    tasks.configure(broker_url=sys.argv[1], context_factory=_no_pipeline)
    tasks.app.worker_main(worker_arguments(queue="io", concurrency=2, loglevel="INFO"))
