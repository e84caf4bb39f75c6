"""Worker processes run under a supervisor that starts a dead one again."""

import sys
import time

from radground.worker import SupervisedProcesses, worker_command


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_dead_child_is_started_again_and_stop_ends_them_all():
    supervised = SupervisedProcesses([
        ("steady", [sys.executable, "-c", "import time; time.sleep(120)"]),
        ("crashing", [sys.executable, "-c", "raise SystemExit(3)"]),
    ])
    supervised.start()
    try:
        steady_pid = supervised.pids()[0]
        _wait(lambda: supervised.restarts >= 2)
        assert steady_pid in supervised.pids()  # the healthy one is left alone
    finally:
        supervised.stop(timeout=10)
    assert supervised.pids() == []


def test_a_child_that_keeps_dying_at_start_is_restarted_with_a_growing_pause():
    supervised = SupervisedProcesses([("crashing", [sys.executable, "-c", "raise SystemExit(3)"])])
    supervised.start()
    try:
        time.sleep(4.5)  # pauses 1 s, 2 s, 4 s: at most 3 restarts in this time, not one per check
    finally:
        supervised.stop(timeout=10)
    assert 1 <= supervised.restarts <= 3


def test_worker_command_names_the_queue_and_its_supervisor(tmp_path):
    command = worker_command(tmp_path / "radground.toml", "gpu", 2)
    assert command[1:3] == ["-m", "radground"]
    assert command[command.index("--queues") + 1] == "gpu"
    assert command[command.index("--concurrency") + 1] == "2"
    assert "--parent-pid" in command
