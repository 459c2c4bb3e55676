"""The run lock: one run per gateway, a bounded wait on an injected clock, every way out
releases it, and a lock path that is not a regular file is refused without blocking."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ibkr_resilience._app.jobs.exits import ExitCode
from ibkr_resilience._app.jobs.runlock import (
    POLL_INTERVAL,
    RunLocked,
    RunLockError,
    lock_path,
    run_lock,
)
from ibkr_resilience.testing import FakeTime

HOLDER = {"pid": 4242, "script": "submit_orders.py", "run_id": "abc123"}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "lock-127.0.0.1-4002"


@pytest.fixture
def other_run(path: Path) -> Iterator[int]:
    """Another open file description holding the lock, with its holder note (flock
    locks belong to the open file, so this conflicts even within one process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"pid": 77, "script": "close_positions.py", "run_id": "r1"}).encode())
    yield fd
    os.close(fd)


def is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_a_free_lock_is_taken_at_once_with_the_holder_noted_then_released(path: Path) -> None:
    t = FakeTime()
    with run_lock(path, wait=60, holder=HOLDER, clock=t.clock, sleep=t.sleep):
        assert not is_free(path)
        assert json.loads(path.read_text()) == HOLDER
    assert t.sleeps == []
    assert is_free(path)
    assert path.read_text() == ""  # no stale holder named after the run


def test_held_past_the_wait_is_run_locked_naming_the_holder(path: Path, other_run: int) -> None:
    t = FakeTime()
    with (
        pytest.raises(RunLocked) as caught,
        run_lock(path, wait=2.0, holder=HOLDER, clock=t.clock, sleep=t.sleep),
    ):
        pytest.fail("the block must not run")
    assert caught.value.code is ExitCode.LOCKED and int(ExitCode.LOCKED) == 6
    text = str(caught.value)
    assert "pid 77, script close_positions.py, run_id r1" in text
    assert "2 s (IBKR_LOCK_WAIT)" in text and "nothing was sent" in text
    assert sum(t.sleeps) == pytest.approx(2.0)  # bounded by the wait, on the clock
    assert max(t.sleeps) <= POLL_INTERVAL  # polls, no busy spin, no single long sleep
    assert len(t.sleeps) == pytest.approx(2.0 / POLL_INTERVAL, abs=1)


def test_zero_wait_gives_up_without_sleeping(path: Path, other_run: int) -> None:
    t = FakeTime()
    with (
        pytest.raises(RunLocked),
        run_lock(path, wait=0, holder=HOLDER, clock=t.clock, sleep=t.sleep),
    ):
        pass
    assert t.sleeps == []


def test_released_during_the_wait_is_taken(path: Path, other_run: int) -> None:
    t = FakeTime()

    def sleep(seconds: float) -> None:
        t.sleep(seconds)
        if len(t.sleeps) == 3:
            fcntl.flock(other_run, fcntl.LOCK_UN)  # the other run ends

    with run_lock(path, wait=60, holder=HOLDER, clock=t.clock, sleep=sleep):
        assert json.loads(path.read_text()) == HOLDER
    assert len(t.sleeps) == 3


def test_an_exception_in_the_block_releases_the_lock(path: Path) -> None:
    with pytest.raises(ValueError), run_lock(path, wait=1, holder=HOLDER):
        raise ValueError("boom")
    assert is_free(path)


def test_a_fifo_is_refused_without_blocking(path: Path) -> None:
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    with (
        pytest.raises(RunLockError, match="is not a regular file"),
        run_lock(path, wait=60, holder=HOLDER),
    ):
        pass


def test_a_directory_is_refused(path: Path) -> None:
    path.mkdir(parents=True)
    with (
        pytest.raises(RunLockError, match=r"cannot open run lock .*Is a directory"),
        run_lock(path, wait=60, holder=HOLDER),
    ):
        pass


def test_lock_path_is_in_the_state_directory_keyed_by_host_and_port(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    assert lock_path("127.0.0.1", 4002, env) == tmp_path / "ibkr_resilience" / "lock-127.0.0.1-4002"
    assert lock_path("::1", 7497, env).name == "lock-__1-7497"
    assert lock_path("gw/../x", 1, env).parent == tmp_path / "ibkr_resilience"
