"""The node-exporter textfile, checked with the official Prometheus client's own parser."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ibkr_resilience._notify.metrics import RunMetrics, textfile_path, write_textfile


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge"
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_successful_run_is_written_and_parsed(tmp_path: Path) -> None:
    run = RunMetrics(
        "submit_orders",
        1_700_000_000.5,
        0,
        3.25,
        connect_attempts=2,
        orders={"submitted": 5, "skipped": 1},
    )
    path = write_textfile(tmp_path, run)
    assert (
        path
        == textfile_path(tmp_path, "submit_orders")
        == tmp_path / ("ibkr_resilience_submit_orders.prom")
    )
    got = samples(path)
    job = (("job", "submit_orders"),)
    assert got[("ibkr_job_last_run_timestamp_seconds", job)] == 1_700_000_000.5
    assert got[("ibkr_job_last_success_timestamp_seconds", job)] == 1_700_000_000.5
    assert got[("ibkr_job_last_exit_code", job)] == 0
    assert got[("ibkr_job_last_duration_seconds", job)] == 3.25
    assert got[("ibkr_job_last_connect_attempts", job)] == 2
    assert got[("ibkr_job_last_failed", (("failure_class", "none"), *job))] == 0
    assert got[("ibkr_job_last_orders", (("job", "submit_orders"), ("outcome", "submitted")))] == 5
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_a_failed_run_keeps_the_last_success_time(tmp_path: Path) -> None:
    write_textfile(tmp_path, RunMetrics("close_positions", 1000.0, 0, 1.0))
    path = write_textfile(
        tmp_path,
        RunMetrics(
            "close_positions", 2000.0, 1, 120.0, connect_attempts=240, failure_class="refused"
        ),
    )
    assert path is not None
    got = samples(path)
    job = (("job", "close_positions"),)
    assert got[("ibkr_job_last_success_timestamp_seconds", job)] == 1000.0
    assert got[("ibkr_job_last_run_timestamp_seconds", job)] == 2000.0
    assert got[("ibkr_job_last_exit_code", job)] == 1
    assert got[("ibkr_job_last_failed", (("failure_class", "refused"), *job))] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ibkr_resilience_close_positions.prom"]


def test_a_job_that_never_succeeded_has_no_success_time(tmp_path: Path) -> None:
    path = write_textfile(tmp_path, RunMetrics("odd job/name", 5.0, 2, 0.1))
    assert path is not None and path.name == "ibkr_resilience_odd_job_name.prom"
    names = {name for name, _ in samples(path)}
    assert "ibkr_job_last_success_timestamp_seconds" not in names
    assert ("ibkr_job_last_exit_code", (("job", "odd job/name"),)) in samples(path)


def test_an_unwritable_directory_is_logged_not_raised(tmp_path: Path) -> None:
    assert write_textfile(tmp_path / "missing", RunMetrics("j", 1.0, 0, 1.0)) is None
