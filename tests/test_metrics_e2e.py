"""``IBKR_METRICS_DIR`` end to end: the real scripts (subprocesses) against the simulated
gateway, the textfile parsed with the official Prometheus client's parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ibkr_resilience.simulator import FakeGateway

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "paper_trading"
PLAN = REPO / "docs" / "examples" / "plan.csv"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(path: Path) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "IBKR_CONNECT_TIMEOUT": "2",
        "IBKR_CONNECT_MAX_TIME": "60",
        "IBKR_ACK_TIMEOUT": "5",
        "IBKR_LOG_FORMAT": "json",
        "IBKR_JOURNAL": str(tmp_path / "journal.jsonl"),
        "IBKR_METRICS_DIR": str(tmp_path / "textfiles"),
        **extra,
    }


def submit_orders(*args: str | int) -> list[str]:
    """The command line of the submit script on the example plan."""
    return [sys.executable, str(SCRIPTS / "submit_orders.py"), "--plan", str(PLAN), *map(str, args)]


def run(
    tmp_path: Path, cmd: list[str], timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to its end as cron would, with ``env(tmp_path, **extra)``."""
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env(tmp_path, **extra)
    )


def test_each_run_rewrites_its_jobs_textfile(tmp_path: Path) -> None:
    (tmp_path / "textfiles").mkdir()
    prom = tmp_path / "textfiles" / "ibkr_resilience_submit_orders.prom"
    job = (("job", "submit_orders"),)
    with FakeGateway() as gw:
        # Run 1: the gateway is restarting; it opens once the script's log shows a
        # refused attempt, so the run needs at least two connect attempts.
        gw.down()
        before = time.time()
        proc = subprocess.Popen(
            submit_orders("--port", gw.port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(tmp_path),
        )
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                if json.loads(line).get("failure_class") == "refused":
                    break
            gw.up()
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 0, out + err
        first = samples(prom)
        assert first[("ibkr_job_last_exit_code", job)] == 0
        assert first[("ibkr_job_last_connect_attempts", job)] >= 2
        assert first[("ibkr_job_last_failed", (("failure_class", "none"), *job))] == 0
        success_at = first[("ibkr_job_last_success_timestamp_seconds", job)]
        assert before <= success_at <= time.time()
        assert first[("ibkr_job_last_run_timestamp_seconds", job)] == success_at
        assert 0 < first[("ibkr_job_last_duration_seconds", job)] < 120
        placed = len({getattr(m.request, "order_ref", None) for m in gw.messages("placeOrder")})
        submitted = first[("ibkr_job_last_orders", (*job, ("outcome", "submitted")))]
        assert submitted > 0 and submitted <= placed

        # close_positions writes a file of its own.
        close = [sys.executable, str(SCRIPTS / "close_positions.py"), "--port", str(gw.port)]
        r = run(tmp_path, close)
        assert r.returncode == 0, r.stdout + r.stderr
        closed = samples(tmp_path / "textfiles" / "ibkr_resilience_close_positions.prom")
        assert closed[("ibkr_job_last_exit_code", (("job", "close_positions"),))] == 0

    # Run 2: the gateway is gone. The run fails with the connect's failure class, and the
    # time of the last success is carried over for the "no success since" alert.
    r = run(tmp_path, submit_orders("--port", gw.port), IBKR_CONNECT_MAX_TIME="1")
    assert r.returncode == 1, r.stdout + r.stderr
    second = samples(prom)
    assert second[("ibkr_job_last_exit_code", job)] == 1
    assert second[("ibkr_job_last_failed", (("failure_class", "refused"), *job))] == 1
    assert second[("ibkr_job_last_success_timestamp_seconds", job)] == success_at
    assert second[("ibkr_job_last_run_timestamp_seconds", job)] > success_at
    assert second[("ibkr_job_last_connect_attempts", job)] >= 1
    assert not [k for k in second if k[0] == "ibkr_job_last_orders"]
    assert sorted(os.listdir(tmp_path / "textfiles")) == [
        "ibkr_resilience_close_positions.prom",
        "ibkr_resilience_submit_orders.prom",
    ]


def test_a_bad_setting_is_still_a_failed_run_in_the_metrics(tmp_path: Path) -> None:
    (tmp_path / "textfiles").mkdir()
    r = run(tmp_path, submit_orders(), timeout=60, IBKR_PORT="nope")
    assert r.returncode == 2
    got = samples(tmp_path / "textfiles" / "ibkr_resilience_submit_orders.prom")
    job = (("job", "submit_orders"),)
    assert got[("ibkr_job_last_exit_code", job)] == 2
    assert got[("ibkr_job_last_failed", (("failure_class", "bad_input"), *job))] == 1
    assert got[("ibkr_job_last_connect_attempts", job)] == 0


def test_an_unusable_metrics_dir_is_a_warning_not_a_failed_run(tmp_path: Path) -> None:
    """IBKR_METRICS_DIR fails open: the orders matter more than the metrics."""
    missing = tmp_path / "no-such-dir"
    with FakeGateway() as gw:
        r = run(tmp_path, submit_orders("--port", gw.port), IBKR_METRICS_DIR=str(missing))
        assert gw.messages("placeOrder")
    assert r.returncode == 0, r.stdout + r.stderr
    failed = [json.loads(line) for line in r.stderr.splitlines() if '"ibkr.metrics.failed"' in line]
    assert len(failed) == 1 and failed[0]["level"] == "warning"
    assert failed[0]["path"] == str(missing / "ibkr_resilience_submit_orders.prom")
    assert not missing.exists()
