"""Celery app and tasks: queue ``gpu`` (inference) and queue ``io`` (export, delivery).

The tasks are thin: they take IDs and call :mod:`worklist.pipeline`, which
re-checks state and is idempotent. One base task holds the policy: late
acknowledgement and rejection on a lost worker (a crashed worker never loses a
job), hard and soft time limits, a narrow list of retryable errors (the
database or broker briefly unavailable), and a log context with the job id.

The app is configured by the application (:func:`configure`), and the
per-process :class:`~worklist.pipeline.PipelineContext` is built lazily by the
factory it registers — in the worker process that uses it, after any fork:
database pools and models never cross a fork.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from sqlalchemy.exc import OperationalError

from worklist import embedded_broker
from worklist.context import PipelineContext
from worklist.delivery import run_delivery
from worklist.pipeline import record_crash, requeue_stale, run_export, run_inference

__all__ = ["CeleryEnqueuer", "app", "configure", "deliver", "export", "infer"]

logger = logging.getLogger(__name__)

app = Celery("radground")

_context_factory: Callable[[], PipelineContext] | None = None
_context: PipelineContext | None = None
_context_lock = threading.Lock()


def configure(
    *,
    broker_url: str,
    context_factory: Callable[[], PipelineContext],
    task_time_limit_seconds: int = 900,
    visibility_timeout_seconds: int = 3600,
    broker_use_ssl: dict[str, Any] | None = None,
) -> Celery:
    """Configure the app for this process; ``context_factory`` builds the pipeline context,
    ``broker_use_ssl`` is Celery's setting of that name (TLS to a ``rediss://`` or
    ``amqps://`` broker).

    The workers take no remote-control commands (``worker_enable_remote_control`` off): whoever
    can write to the broker cannot shut them down, restart their pools or change their queues
    (the node and the console never use ``control``/``inspect``)."""
    global _context_factory, _context
    _context_factory, _context = context_factory, None
    # Redis (and SQS) redeliver unacknowledged messages after the visibility
    # timeout; other transports reject the option.
    options: dict[str, float] = {}
    if broker_url.startswith(("redis", "sqs")):
        options["visibility_timeout"] = visibility_timeout_seconds
    elif broker_url.startswith(f"{embedded_broker.ALIAS}+"):
        # The embedded SQLite-file broker: kombu's SQLAlchemy transport with waiting consumers
        # woken by publishers (worklist.embedded_broker). "sqla+sqlite:///..." is kombu's stock
        # transport as it is (it polls every second; it hands transport options to
        # SQLAlchemy's create_engine, so its polling interval cannot be set through them).
        embedded_broker.register()
    elif broker_url.startswith("sqla+sqlite:"):
        logger.warning(
            "workers.broker_url uses kombu's stock SQLite transport, which polls every second "
            "(each hop of a job waits for it); %s+sqlite:///PATH is the same file with workers "
            "woken on publish (docs/third-party-patches.md)",
            embedded_broker.ALIAS,
        )
    app.conf.update(
        broker_url=broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options=options,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=task_time_limit_seconds,
        task_soft_time_limit=max(task_time_limit_seconds - 30, task_time_limit_seconds // 2),
        task_serializer="json",
        accept_content=["json"],
        task_routes={"radground.infer": {"queue": "gpu"}, "radground.*": {"queue": "io"}},
        task_default_queue="io",
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_timeout=10,
        broker_use_ssl=broker_use_ssl or False,
        worker_enable_remote_control=False,
    )
    return app


def context() -> PipelineContext:
    """This process's pipeline context (built on first use)."""
    global _context
    if _context is None:
        with _context_lock:
            if _context is None:
                if _context_factory is None:
                    raise RuntimeError("worklist.tasks.configure() was not called in this process")
                _context = _context_factory()
    return _context


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    """A forked pool process builds its own context (no pooled connection or model crosses a
    fork)."""
    global _context
    _context = None


class RadGroundTask(Task):
    """The one place task policy lives."""

    acks_late = True
    reject_on_worker_lost = True
    #: Only infrastructure hiccups are retried by Celery; domain failures are
    #: recorded on the job by the pipeline, and delivery retries are scheduled by it.
    autoretry_for = (OperationalError,)
    retry_backoff = True
    retry_backoff_max = 120
    retry_jitter = True
    max_retries = 10

    def on_failure(
        self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any
    ) -> None:
        logger.error("Task %s(%s) failed: %s", self.name, args, type(exc).__name__)


@app.task(base=RadGroundTask, name="radground.infer")
def infer(job_id: int) -> None:
    """Queue ``gpu``: run the model for a job."""
    with _crash_recorded(job_id=job_id, step="inference"):
        run_inference(context(), job_id)


@app.task(base=RadGroundTask, name="radground.export")
def export(job_id: int) -> None:
    """Queue ``io``: build and record a job's outputs."""
    with _crash_recorded(job_id=job_id, step="export"):
        run_export(context(), job_id)


@app.task(base=RadGroundTask, name="radground.deliver")
def deliver(delivery_id: int, attempt: int) -> None:
    """Queue ``io``: one delivery attempt."""
    with _crash_recorded(delivery_id=delivery_id, step="delivery"):
        run_delivery(context(), delivery_id, attempt)


@contextlib.contextmanager
def _crash_recorded(
    *, step: str, job_id: int | None = None, delivery_id: int | None = None
) -> Iterator[None]:
    """Unexpected exceptions fail the job or delivery (then propagate to Celery's
    log); database outages propagate untouched, for Celery to retry."""
    try:
        yield
    except OperationalError:
        raise
    except Exception as exc:
        # the frames, not the message: an exception's text may quote data set values
        logger.error(
            "Unexpected %s in %s (job %s, delivery %s):\n%s",
            type(exc).__name__,
            step,
            job_id,
            delivery_id,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        record_crash(context(), job_id=job_id, delivery_id=delivery_id, step=step, error=exc)
        raise


class CeleryEnqueuer:
    """:class:`~worklist.pipeline.Enqueuer` sending Celery messages."""

    def inference(self, job_id: int) -> None:
        infer.apply_async((job_id,), queue="gpu")

    def export(self, job_id: int) -> None:
        export.apply_async((job_id,), queue="io")

    def delivery(self, delivery_id: int, attempt: int, countdown: float = 0.0) -> None:
        deliver.apply_async((delivery_id, attempt), queue="io", countdown=countdown or None)


def sweep() -> int:
    """Enqueue again what lost messages left behind (run by the node's monitor)."""
    return requeue_stale(context())
