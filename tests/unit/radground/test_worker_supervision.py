"""Child processes (Celery workers, the node's listeners) run under one supervisor
that starts a dead one again, pausing longer each time one keeps dying at start."""

import multiprocessing
import os
import signal
import sys
import time

from radground.supervision import SpawnedProcess, Supervisor
from radground.worker import SupervisedProcesses, worker_command


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


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


def _exit_at_once() -> None:
    raise SystemExit(3)


def _sleep() -> None:
    time.sleep(120)


def _spawned(target):
    def start():
        process = multiprocessing.get_context("spawn").Process(target=target, daemon=True)
        process.start()
        return SpawnedProcess(process)
    return start


def test_spawned_processes_get_the_same_restarts_and_backoff_as_commands(caplog):
    supervisor = Supervisor([("steady", _spawned(_sleep)), ("crashing", _spawned(_exit_at_once))])
    supervisor.start()
    try:
        steady_pid = supervisor.pids()[0]
        _wait(lambda: supervisor.restarts >= 2)
        assert steady_pid in supervisor.pids()
        os.kill(steady_pid, signal.SIGKILL)  # the OOM killer takes the one that was healthy
        _wait(lambda: steady_pid not in supervisor.pids() and len(supervisor.pids()) >= 1)
    finally:
        supervisor.stop(timeout=10)
    assert supervisor.pids() == []
    crashes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("crashing")]
    assert crashes and all("restarting it in" in m for m in crashes)  # backoff, not an instant respawn


def test_the_supervisor_reports_each_dead_child_before_restarting_it():
    exits = []
    supervised = SupervisedProcesses([("crashing", [sys.executable, "-c", "raise SystemExit(3)"])],
                                     on_exit=lambda name, pid, code: exits.append((name, pid, code)))
    supervised.start()
    try:
        first_pid = _wait(lambda: exits and exits[0][1])
        _wait(lambda: supervised.restarts >= 1)
    finally:
        supervised.stop(timeout=10)
    assert exits[0] == ("crashing", first_pid, 3)
    assert len(exits) >= supervised.restarts  # every restart follows a report


def test_worker_command_names_the_queue_and_its_supervisor(tmp_path):
    command = worker_command(tmp_path / "radground.toml", "gpu", 2)
    assert command[1:3] == ["-m", "radground"]
    assert command[command.index("--queues") + 1] == "gpu"
    assert command[command.index("--concurrency") + 1] == "2"
    assert "--parent-pid" in command
