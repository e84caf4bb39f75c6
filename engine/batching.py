"""Micro-batching: group concurrent generation requests into model batches.

One model instance per worker process serves many callers (threads handling
images of one or several studies). :class:`MicroBatcher` queues their requests
and a single background thread hands them to
:meth:`engine.model.RegionAwareModel.generate` in batches: a batch is sent as
soon as it reaches the size cap, or when its oldest request has waited
``max_wait_ms``, whichever comes first.

Create it after fork, in the process that owns the model (like the model
itself), and close it before the model.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, Self

from engine.errors import EngineError
from engine.metrics import MODEL_INFERENCE_SECONDS
from engine.model import GenerationRequest, RegionAwareModel

__all__ = ["BatcherClosedError", "BatcherStats", "BatchingError", "MicroBatcher"]

logger = logging.getLogger(__name__)

#: How many recent queue waits the percentiles are computed over.
_WAIT_WINDOW = 10_000


class BatchingError(EngineError, RuntimeError):
    """The micro-batcher could not run a request."""


class BatcherClosedError(BatchingError):
    """The micro-batcher was closed before the request ran (or was submitted after close)."""


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of the batcher's metrics.

    Attributes
    ----------
    batches_run
        Calls to ``model.generate`` made so far (failed ones included).
    requests_completed
        Requests whose future got a result.
    requests_failed
        Requests whose future got an exception (their batch failed, or close
        without drain).
    batch_size_histogram
        Batch size → number of batches of that size.
    queue_wait_p50_ms, queue_wait_p95_ms
        Median and 95th percentile of the time requests spent queued before
        their batch started, in milliseconds, over the last 10 000 requests;
        ``None`` before the first batch.
    pending
        Requests queued and not yet in a batch.
    max_batch_size
        The effective cap: ``min(max_batch_size, model.max_batch_size)``.
    """

    batches_run: int
    requests_completed: int
    requests_failed: int
    batch_size_histogram: Mapping[int, int]
    queue_wait_p50_ms: float | None
    queue_wait_p95_ms: float | None
    pending: int
    max_batch_size: int

    @property
    def mean_batch_size(self) -> float | None:
        """Requests per batch, averaged over every batch run."""
        total = sum(self.batch_size_histogram.values())
        if not total:
            return None
        return sum(size * count for size, count in self.batch_size_histogram.items()) / total


class _Pending(NamedTuple):
    request: GenerationRequest
    future: Future[str]
    enqueued: float  # time.monotonic()


def _percentile_ms(sorted_seconds: list[float], q: float) -> float | None:
    """Percentile ``q`` (0..1) of sorted durations (nearest index), in milliseconds."""
    if not sorted_seconds:
        return None
    index = min(len(sorted_seconds) - 1, max(0, round(q * (len(sorted_seconds) - 1))))
    return sorted_seconds[index] * 1000.0


class MicroBatcher:
    """Group concurrent requests into batches for one model.

    Parameters
    ----------
    model
        The loaded model; its ``max_batch_size`` caps every batch.
    max_batch_size
        Largest batch to form (further capped by ``model.max_batch_size``);
        ``None`` means the model's cap.
    max_wait_ms
        Longest time, in milliseconds, the oldest queued request waits for
        others before a smaller batch is sent. 0 sends whatever is queued at once.

    Examples
    --------
    >>> batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=5)  # doctest: +SKIP
    >>> texts = batcher.generate(requests)  # doctest: +SKIP
    >>> batcher.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: RegionAwareModel,
        *,
        max_batch_size: int | None = None,
        max_wait_ms: float = 5.0,
    ) -> None:
        model_cap = getattr(model, "max_batch_size", None)
        if isinstance(model_cap, bool) or not isinstance(model_cap, int) or model_cap < 1:
            raise BatchingError(f"model.max_batch_size must be a positive int, got {model_cap!r}")
        if max_batch_size is not None and (
            isinstance(max_batch_size, bool)
            or not isinstance(max_batch_size, int)
            or max_batch_size < 1
        ):
            raise BatchingError(
                f"max_batch_size must be a positive int or None, got {max_batch_size!r}"
            )
        if (
            isinstance(max_wait_ms, bool)
            or not isinstance(max_wait_ms, (int, float))
            or not 0 <= max_wait_ms < 3.6e6
        ):
            raise BatchingError(
                f"max_wait_ms must be a number of milliseconds >= 0, got {max_wait_ms!r}"
            )
        self._model = model
        self._inference_seconds = MODEL_INFERENCE_SECONDS.labels(model.info.name)
        self._cap = model_cap if max_batch_size is None else min(max_batch_size, model_cap)
        self._max_wait = float(max_wait_ms) / 1000.0
        self._cond = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._closed = False
        self._batches_run = 0
        self._completed = 0
        self._failed = 0
        self._histogram: collections.Counter[int] = collections.Counter()
        self._waits: collections.deque[float] = collections.deque(maxlen=_WAIT_WINDOW)
        self._thread = threading.Thread(
            target=self._run, name="radground-microbatcher", daemon=True
        )
        self._thread.start()

    @property
    def max_batch_size(self) -> int:
        """The effective cap on batch size."""
        return self._cap

    # -- callers --------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> Future[str]:
        """Queue one request; the future resolves to the model's output text.

        Raises
        ------
        BatcherClosedError
            When the batcher is closed.
        """
        if not isinstance(request, GenerationRequest):
            raise BatchingError(f"submit takes a GenerationRequest, got {type(request).__name__}")
        future: Future[str] = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosedError(
                    "the micro-batcher is closed; no new requests are accepted"
                )
            self._queue.append(_Pending(request, future, time.monotonic()))
            self._cond.notify_all()
        return future

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Submit ``requests`` and wait for all of them (same contract as
        ``RegionAwareModel.generate``; they may be batched with other callers').

        Raises the first failure among the requests, after all have finished.
        """
        futures = [self.submit(r) for r in requests]
        return [f.result() for f in futures]

    def stats(self) -> BatcherStats:
        """A consistent snapshot of the metrics."""
        with self._cond:
            waits = sorted(self._waits)
            return BatcherStats(
                batches_run=self._batches_run,
                requests_completed=self._completed,
                requests_failed=self._failed,
                batch_size_histogram=MappingProxyType(dict(sorted(self._histogram.items()))),
                queue_wait_p50_ms=_percentile_ms(waits, 0.50),
                queue_wait_p95_ms=_percentile_ms(waits, 0.95),
                pending=len(self._queue),
                max_batch_size=self._cap,
            )

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting requests and stop the background thread.

        Parameters
        ----------
        drain
            ``True`` runs every queued request first; ``False`` fails them with
            :class:`BatcherClosedError`.
        timeout
            Seconds to wait for the background thread (``None``: as long as the
            batch in flight takes).
        """
        failed: list[_Pending] = []
        with self._cond:
            self._closed = True
            if not drain:
                failed = list(self._queue)
                self._queue.clear()
                self._failed += len(failed)
            self._cond.notify_all()
        for item in failed:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(
                    BatcherClosedError("the micro-batcher was closed before this request ran")
                )
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if failed:
            logger.info(
                "micro-batcher closed: %d queued request(s) failed without running", len(failed)
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- background thread ----------------------------------------------------------

    def _next_batch(self) -> list[_Pending] | None:
        """Wait for and take the next batch; ``None`` when closed and empty."""
        with self._cond:
            while True:
                if not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                if len(self._queue) >= self._cap or self._closed:
                    break
                remaining = self._queue[0].enqueued + self._max_wait - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [self._queue.popleft() for _ in range(min(self._cap, len(self._queue)))]
            started = time.monotonic()
            self._waits.extend(started - item.enqueued for item in batch)
            return batch

    def _run(self) -> None:
        live: list[_Pending] = []
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                live = [item for item in batch if item.future.set_running_or_notify_cancel()]
                if live:
                    self._run_batch(live)
                live = []
        except BaseException as exc:
            # Something escaped (SystemExit, a bug): never leave callers waiting forever.
            self._stop_after_crash(live, exc)
            raise

    def _stop_after_crash(self, in_flight: list[_Pending], exc: BaseException) -> None:
        error = BatchingError(f"the micro-batcher's thread stopped ({type(exc).__name__})")
        with self._cond:
            self._closed = True
            stranded = [*in_flight, *self._queue]
            self._queue.clear()
            self._failed += len(stranded)
        for item in stranded:
            if not item.future.done() and (
                item.future.running() or item.future.set_running_or_notify_cancel()
            ):
                item.future.set_exception(error)
        logger.error("micro-batcher thread stopped by %s", type(exc).__name__)

    def _run_batch(self, batch: list[_Pending]) -> None:
        error: BaseException | None = None
        outputs: list[str] = []
        started = time.perf_counter()
        try:
            outputs = self._model.generate([item.request for item in batch])
        except Exception as exc:  # noqa: BLE001 - handed to exactly this batch's callers
            error = exc
            logger.warning(
                "model.generate failed on a batch of %d: %s", len(batch), type(exc).__name__
            )
        if error is None and (
            not isinstance(outputs, list)
            or len(outputs) != len(batch)
            or not all(isinstance(o, str) for o in outputs)
        ):
            got = f"{len(outputs)} items" if isinstance(outputs, list) else type(outputs).__name__
            error = BatchingError(
                f"model.generate returned {got} for a batch of {len(batch)}; expected "
                "one string each"
            )
        self._inference_seconds.observe(time.perf_counter() - started)
        with self._cond:
            self._batches_run += 1
            self._histogram[len(batch)] += 1
            if error is None:
                self._completed += len(batch)
            else:
                self._failed += len(batch)
        for index, item in enumerate(batch):
            if error is None:
                item.future.set_result(outputs[index])
            else:
                item.future.set_exception(error)
