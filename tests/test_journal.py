"""The journal: durable per line, append-only, readable after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from ibkr_resilience._app.jobs.journal import (
    SUBMITTED,
    Journal,
    JournalError,
    read_journal,
)
from ibkr_resilience._app.jobs.plan import parse_plan

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "deep" / "journal.jsonl"


def lines(p: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]


@freeze_time("2024-05-06 10:00:01.234567")
def test_append_writes_one_complete_record(path: Path) -> None:
    order = parse_plan("symbol,side,quantity,order_type\nAAPL,BUY,10,MKT\n").orders[0]
    with Journal(path, script="submit_orders.py", run_id="r1") as journal:
        written = journal.append(
            SUBMITTED,
            **order.journal_fields(),
            order_id=7,
            perm_id=None,
            status="Submitted",
            message="",
        )
    (record,) = lines(path)
    assert record == written
    assert list(record)[:4] == ["time", "event", "script", "run_id"]
    assert record["time"] == "2024-05-06T10:00:01.234Z"
    assert (record["event"], record["script"], record["run_id"]) == (
        SUBMITTED,
        "submit_orders.py",
        "r1",
    )
    assert record["order_ref"] == order.order_ref
    assert record["contract"]["symbol"] == "AAPL"
    assert (record["order_id"], record["perm_id"], record["status"]) == (7, None, "Submitted")


def test_parent_directories_are_created_and_records_append(path: Path) -> None:
    Journal(path, run_id="a").append("order.skipped", order_ref="p:1")
    Journal(path, run_id="b").append("order.skipped", order_ref="p:2")
    assert [(r["run_id"], r["order_ref"]) for r in lines(path)] == [("a", "p:1"), ("b", "p:2")]


def test_each_line_is_one_write_and_is_fsynced_before_append_returns(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(path)
    events: list[tuple[str, int]] = []
    real_write, real_fsync = os.write, os.fsync

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(fd: int, *args: Any) -> Any:
            result = real(fd, *args)
            if fd == journal._fd:
                events.append((name, path.read_bytes().count(b"\n")))
            return result

        return wrapper

    monkeypatch.setattr(os, "write", spy("write", real_write))
    monkeypatch.setattr(os, "fsync", spy("fsync", real_fsync))
    for n in range(3):
        journal.append("order.dry_run", n=n, note="x" * 5000)
    # write then fsync per line, with the line complete on disk before the fsync
    assert events == [
        ("write", 1),
        ("fsync", 1),
        ("write", 2),
        ("fsync", 2),
        ("write", 3),
        ("fsync", 3),
    ]


def test_a_write_error_is_a_one_line_journal_error(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(path)

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(JournalError) as info:
        journal.append("order.submitted")
    assert str(info.value) == f"cannot write journal {path}: No space left on device"
    assert info.value.errno == 28


CHILD = textwrap.dedent(
    """
    import sys
    from ibkr_resilience._app.jobs.journal import Journal
    journal = Journal(sys.argv[1], script="child", run_id="killed")
    journal.append("order.submitted", order_ref="plan-00000000:1", order_id=1)
    print("written", flush=True)
    sys.stdin.read()  # stay alive until killed
    """
)


def test_a_record_survives_the_writer_being_killed_right_after(path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "written\n"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    contents = read_journal(path)
    assert contents.skipped == 0
    assert [(r["run_id"], r["order_ref"]) for r in contents] == [("killed", "plan-00000000:1")]


WRITER = textwrap.dedent(
    """
    import sys
    from ibkr_resilience._app.jobs.journal import Journal
    journal = Journal(sys.argv[1], run_id=sys.argv[2])
    for n in range(200):
        journal.append("order.dry_run", n=n, pad="x" * 3000)
    """
)


def test_concurrent_writers_never_interleave_within_a_line(path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    Journal(path).close()  # create it once so no writer races the directory creation
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{i}"], env=env)
        for i in range(4)
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0, 0]
    contents = read_journal(path)
    assert contents.skipped == 0
    for i in range(4):
        assert sorted(r["n"] for r in contents if r["run_id"] == f"w{i}") == list(range(200))


def test_torn_last_line_is_skipped_and_counted(path: Path) -> None:
    journal = Journal(path)
    journal.append("order.submitted", order_ref="p:1")
    journal.append("order.submitted", order_ref="p:2")
    journal.close()
    with path.open("ab") as f:
        f.write(b'{"time": "2024-05-06T10:00:00.000Z", "event": "order.sub')
    contents = read_journal(path)
    assert [r["order_ref"] for r in contents] == ["p:1", "p:2"]
    assert contents.skipped == 1


def test_a_new_writer_ends_a_torn_line_before_appending(path: Path) -> None:
    Journal(path).append("order.submitted", order_ref="p:1")
    with path.open("ab") as f:
        f.write(b'{"time": "2024-05-')
    Journal(path).append("order.submitted", order_ref="p:2")
    contents = read_journal(path)
    assert [r["order_ref"] for r in contents] == ["p:1", "p:2"]
    assert contents.skipped == 1
    assert path.read_bytes().endswith(b"\n")


def test_garbage_lines_anywhere_are_skipped(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"a": 1}\n[1, 2]\n\xff\xfe\n\n{"b": 2}\n"text"\n')
    contents = read_journal(path)
    assert contents.records == [{"a": 1}, {"b": 2}]
    assert contents.skipped == 3


def test_values_json_cannot_encode_are_written_as_text(path: Path) -> None:
    Journal(path).append("order.rejected", error=ValueError("bad price"), where=path)
    (record,) = lines(path)
    assert (record["error"], record["where"]) == ("bad price", str(path))


def test_unwritable_path_fails_at_construction_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(JournalError) as info:
        Journal(blocker / "journal.jsonl")
    assert isinstance(info.value, OSError)
    assert str(info.value).startswith(f"cannot open journal {blocker / 'journal.jsonl'}: ")
    assert "\n" not in str(info.value)
    assert info.value.errno is not None


def test_a_directory_as_journal_path_is_a_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal(tmp_path)


def test_closed_journal_refuses_to_write(path: Path) -> None:
    journal = Journal(path)
    journal.close()
    journal.close()  # idempotent
    with pytest.raises(JournalError, match="is closed"):
        journal.append("order.submitted")


def test_reading_a_missing_journal_is_a_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="cannot read journal"):
        read_journal(tmp_path / "missing.jsonl")


def test_default_script_name_and_run_id(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/opt/cron/submit_orders.py", "--plan", "x.csv"])
    a, b = Journal(path), Journal(path)
    assert a.script == "submit_orders.py"
    assert a.run_id and a.run_id != b.run_id


# --- default path ----------------------------------------------------------------------------


def test_default_path_prefers_ibkr_journal(tmp_path: Path) -> None:
    env = {"IBKR_JOURNAL": str(tmp_path / "j.jsonl"), "XDG_STATE_HOME": "/state"}
    assert Journal.default_path(env) == tmp_path / "j.jsonl"


def test_default_path_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Journal.default_path({"IBKR_JOURNAL": "~/j.jsonl"}) == tmp_path / "j.jsonl"


def test_default_path_uses_xdg_state_home() -> None:
    expected = Path("/var/state/ibkr_resilience/journal.jsonl")
    assert Journal.default_path({"XDG_STATE_HOME": "/var/state", "IBKR_JOURNAL": ""}) == expected


@pytest.mark.parametrize("env", [{}, {"XDG_STATE_HOME": "relative/dir"}])
def test_default_path_falls_back_to_local_state(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".local" / "state" / "ibkr_resilience" / "journal.jsonl"
    assert Journal.default_path(env) == expected


def test_default_path_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_JOURNAL", "/tmp/from-env.jsonl")
    assert Journal.default_path() == Path("/tmp/from-env.jsonl")
