"""Prometheus metrics for cron jobs: one node-exporter textfile per job, rewritten each run.

A cron job is not a server Prometheus can scrape; node-exporter's textfile collector
reads ``*.prom`` files from a directory instead. Each run rewrites its job's file
atomically (a temporary file in the same directory, fsynced, then renamed over the old
one), so the collector never reads half a file. ``ibkr_job_last_success_timestamp_seconds``
carries over from the previous file when this run failed, which is what the alert rule
"no successful run since ..." needs (``docs/operations.md``).

Like every side channel, writing never fails the job: errors are logged and swallowed.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._core.log import get_logger
from .._core.statedir import UnusableStateFile, fsync_dir, read_small_file

log = get_logger("ibkr_resilience.metrics")

PREFIX = "ibkr_job"
_LAST_SUCCESS = re.compile(
    r"^ibkr_job_last_success_timestamp_seconds\{[^}]*\} ([0-9.eE+-]+)$", re.MULTILINE
)
_JOB_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class RunMetrics:
    """What one run reports: times in seconds since the epoch, durations in seconds."""

    job: str
    """Job name, e.g. ``submit_orders`` (the file is ``ibkr_resilience_<job>.prom``)."""
    finished_at: float
    exit_code: int
    duration_s: float
    connect_attempts: int = 0
    failure_class: str | None = None
    orders: Mapping[str, int] = field(default_factory=dict)
    """Orders by outcome (``submitted``, ``rejected``, ``unconfirmed``...)."""


def textfile_path(directory: str | os.PathLike[str], job: str) -> Path:
    """``<directory>/ibkr_resilience_<job>.prom`` (the job name reduced to ``[A-Za-z0-9_]``)."""
    return Path(directory) / f"ibkr_resilience_{_JOB_NAME.sub('_', job)}.prom"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(run: RunMetrics, last_success: float | None) -> str:
    """The textfile's content in the Prometheus text exposition format (version 0.0.4)."""
    job = f'job="{_label(run.job)}"'
    success_at = run.finished_at if run.exit_code == 0 else last_success
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {PREFIX}_{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}_{name} gauge")
        lines.extend(f"{PREFIX}_{name}{{{labels}}} {_number(value)}" for labels, value in samples)

    gauge(
        "last_run_timestamp_seconds",
        "When the last run ended (Unix time).",
        [(job, run.finished_at)],
    )
    if success_at is not None:
        gauge(
            "last_success_timestamp_seconds",
            "When the last run with exit code 0 ended.",
            [(job, success_at)],
        )
    gauge("last_exit_code", "Exit code of the last run (0: success).", [(job, run.exit_code)])
    gauge("last_duration_seconds", "How long the last run took.", [(job, run.duration_s)])
    gauge(
        "last_connect_attempts",
        "Connect attempts the last run made.",
        [(job, run.connect_attempts)],
    )
    gauge(
        "last_failed",
        "1 when the last run failed, labelled with its failure class.",
        [
            (
                f'{job},failure_class="{_label(run.failure_class or "none")}"',
                0 if run.exit_code == 0 else 1,
            )
        ],
    )
    gauge(
        "last_orders",
        "Orders of the last run by outcome.",
        [
            (f'{job},outcome="{_label(outcome)}"', count)
            for outcome, count in sorted(run.orders.items())
        ],
    )
    return "\n".join(lines) + "\n"


def write_textfile(directory: str | os.PathLike[str], run: RunMetrics) -> Path | None:
    """Write ``run`` to its job's textfile atomically; the path, or ``None`` on failure."""
    path = textfile_path(directory, run.job)
    tmp: str | None = None
    try:
        text = render(run, _previous_success(path))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # node-exporter runs as another user
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
        log.debug("ibkr.metrics.written", path=str(path))
        return path
    except OSError as exc:
        log.warning(
            "ibkr.metrics.failed", path=str(path), error_type=type(exc).__name__, error=str(exc)
        )
        return None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _previous_success(path: Path) -> float | None:
    try:
        match = _LAST_SUCCESS.search(read_small_file(path, 64 * 1024))
    except (OSError, UnicodeDecodeError, UnusableStateFile):
        return None
    return float(match.group(1)) if match else None
