"""Tests for engine.batching.MicroBatcher with a fake model that records its batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from engine.batching import BatcherClosedError, BatchingError, MicroBatcher
from engine.model import GenerationRequest, RegionAwareModel
from engine.report import ModelInfo, Task

_IMAGE = np.zeros((4, 4, 3), dtype=np.float32)


def _request(tag: str) -> GenerationRequest:
    """A request whose first target identifies it in the fake model's output."""
    return GenerationRequest(_IMAGE, Task.TEXT_TO_REGION, targets=(tag,))


class RecordingModel(RegionAwareModel):
    """Echoes each request's tag; records batches; can block, sleep or fail."""

    info = ModelInfo.for_version(name="fake", version="1", manufacturer="tests")
    input_size = (4, 4)

    def __init__(self, *, max_batch_size: int = 4, sleep_s: float = 0.0) -> None:
        self.max_batch_size = max_batch_size
        self.sleep_s = sleep_s
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_on: str | None = None
        self.wrong_count = False
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        tags = [r.targets[0] for r in requests]
        with self._lock:
            self.batches.append(tags)
        self.entered.set()
        self.release.wait(10)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail_on is not None and self.fail_on in tags:
            raise RuntimeError(f"poisoned batch {tags}")
        if self.wrong_count:
            return tags[:-1]
        return [f"out:{t}" for t in tags]


def _hold_first_batch(model: RecordingModel, batcher: MicroBatcher):
    """Put one request in flight and keep the model busy with it."""
    model.release.clear()
    model.entered.clear()
    future = batcher.submit(_request("first"))
    assert model.entered.wait(5)
    return future


def test_requests_queued_while_the_model_is_busy_form_capped_batches():
    model = RecordingModel(max_batch_size=4)
    with MicroBatcher(model, max_batch_size=16, max_wait_ms=20) as batcher:
        assert batcher.max_batch_size == 4  # the model's cap wins
        first = _hold_first_batch(model, batcher)
        futures = {f"r{i}": batcher.submit(_request(f"r{i}")) for i in range(7)}
        model.release.set()
        assert first.result(5) == "out:first"
        assert {k: f.result(5) for k, f in futures.items()} == {k: f"out:{k}" for k in futures}
    sizes = [len(b) for b in model.batches]
    assert sizes == [1, 4, 3]
    assert [t for b in model.batches for t in b] == ["first"] + [f"r{i}" for i in range(7)]  # FIFO
    stats = batcher.stats()
    assert stats.batches_run == 3 and stats.requests_completed == 8 and stats.requests_failed == 0
    assert dict(stats.batch_size_histogram) == {1: 1, 3: 1, 4: 1}
    assert stats.mean_batch_size == pytest.approx(8 / 3)
    assert stats.pending == 0


def test_concurrent_callers_from_several_threads_share_batches():
    model = RecordingModel(max_batch_size=8, sleep_s=0.02)
    results: dict[str, str] = {}
    with MicroBatcher(model, max_batch_size=6, max_wait_ms=200) as batcher:
        start = threading.Barrier(12)

        def caller(name: str) -> None:
            start.wait()
            results[name] = batcher.generate([_request(f"{name}-a"), _request(f"{name}-b")])[1]

        threads = [threading.Thread(target=caller, args=(f"t{i}",)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert results == {f"t{i}": f"out:t{i}-b" for i in range(12)}
    sizes = [len(b) for b in model.batches]
    assert sum(sizes) == 24
    assert max(sizes) <= 6  # the batcher's cap
    assert max(sizes) > 1  # concurrency formed real batches
    assert sum(batcher.stats().batch_size_histogram.values()) == len(sizes)


def test_a_lone_request_is_sent_after_max_wait_without_a_full_batch():
    model = RecordingModel(max_batch_size=8)
    with MicroBatcher(model, max_batch_size=8, max_wait_ms=30) as batcher:
        assert batcher.submit(_request("alone")).result(5) == "out:alone"
        stats = batcher.stats()
    assert model.batches == [["alone"]]
    # it waited for company at least max_wait_ms (a lower bound the batcher guarantees)
    assert stats.queue_wait_p50_ms >= 30.0
    assert stats.queue_wait_p95_ms >= stats.queue_wait_p50_ms


def test_max_wait_zero_sends_at_once():
    model = RecordingModel(max_batch_size=8)
    with MicroBatcher(model, max_wait_ms=0) as batcher:
        assert batcher.generate([_request("x")]) == ["out:x"]
    assert model.batches == [["x"]]


def test_an_exception_fails_exactly_the_futures_of_its_batch():
    model = RecordingModel(max_batch_size=3)
    with MicroBatcher(model, max_wait_ms=10) as batcher:
        first = _hold_first_batch(model, batcher)
        model.fail_on = "poison"
        names = ["a", "b", "poison", "c", "d", "e"]  # batches [a, b, poison] and [c, d, e]
        futures = {n: batcher.submit(_request(n)) for n in names}
        model.release.set()
        assert first.result(5) == "out:first"
        for name in ("a", "b", "poison"):
            with pytest.raises(RuntimeError, match="poisoned batch"):
                futures[name].result(5)
        assert [futures[n].result(5) for n in ("c", "d", "e")] == ["out:c", "out:d", "out:e"]
        # the worker thread survived the failure
        model.fail_on = None
        assert batcher.generate([_request("after")]) == ["out:after"]
    assert model.batches[1] == ["a", "b", "poison"]
    stats = batcher.stats()
    assert stats.requests_failed == 3 and stats.requests_completed == 5


def test_wrong_number_of_outputs_fails_the_batch_clearly():
    model = RecordingModel(max_batch_size=2)
    model.wrong_count = True
    with (
        MicroBatcher(model, max_wait_ms=0) as batcher,
        pytest.raises(BatchingError, match="expected one string each"),
    ):
        batcher.generate([_request("a")])


def test_close_drains_pending_requests_by_default():
    model = RecordingModel(max_batch_size=2)
    batcher = MicroBatcher(model, max_wait_ms=10)
    first = _hold_first_batch(model, batcher)
    queued = [batcher.submit(_request(f"q{i}")) for i in range(3)]
    model.release.set()
    batcher.close()
    assert first.result(0) == "out:first"
    assert [f.result(0) for f in queued] == ["out:q0", "out:q1", "out:q2"]
    with pytest.raises(BatcherClosedError):
        batcher.submit(_request("late"))


def test_close_without_drain_fails_pending_with_a_clear_error():
    model = RecordingModel(max_batch_size=2)
    batcher = MicroBatcher(model, max_wait_ms=10)
    first = _hold_first_batch(model, batcher)
    queued = [batcher.submit(_request(f"q{i}")) for i in range(3)]
    closer = threading.Thread(target=batcher.close, kwargs={"drain": False})
    closer.start()
    for future in queued:
        with pytest.raises(BatcherClosedError, match="closed before this request ran"):
            future.result(5)
    model.release.set()  # the batch in flight still completes
    closer.join(5)
    assert first.result(5) == "out:first"
    assert model.batches == [["first"]]
    assert batcher.stats().requests_failed == 3


def test_cancelled_requests_are_skipped():
    model = RecordingModel(max_batch_size=4)
    with MicroBatcher(model, max_wait_ms=10) as batcher:
        first = _hold_first_batch(model, batcher)
        keep = batcher.submit(_request("keep"))
        drop = batcher.submit(_request("drop"))
        assert drop.cancel()
        model.release.set()
        assert first.result(5) == "out:first" and keep.result(5) == "out:keep"
    assert model.batches == [["first"], ["keep"]]


def test_arguments_are_validated():
    model = RecordingModel()
    with pytest.raises(BatchingError, match="max_batch_size"):
        MicroBatcher(model, max_batch_size=0)
    with pytest.raises(BatchingError, match="max_wait_ms"):
        MicroBatcher(model, max_wait_ms=-1)
    with MicroBatcher(model) as batcher, pytest.raises(BatchingError, match="GenerationRequest"):
        batcher.submit("not a request")  # type: ignore[arg-type]


# the thread re-raises what stopped it (pytest reports that as an unhandled thread exception)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_crash_of_the_batcher_thread_fails_callers_instead_of_hanging():
    class Exiting(RecordingModel):
        def generate(self, requests):
            raise SystemExit("worker shutting down")  # not an Exception: escapes the batch handler

    model = Exiting(max_batch_size=2)
    batcher = MicroBatcher(model, max_wait_ms=10)
    future = batcher.submit(_request("a"))
    with pytest.raises(BatchingError, match="thread stopped"):
        future.result(5)
    with pytest.raises(BatcherClosedError):
        batcher.submit(_request("b"))
    batcher.close()
