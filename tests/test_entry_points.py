"""User mistakes at every entry point: one line on stderr, exit 2, never a traceback.

Each case runs the command as a user types it, in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LEGACY = REPO / "docs" / "examples" / "legacy_connect.py"


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *cmd],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ["HOME"]},
    )


def one_line_exit_2(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_demo_restart_must_be_seconds(value: str) -> None:
    line = one_line_exit_2(run("-m", "ibkr_resilience", "demo", "--restart", value))
    assert line.startswith("ibkr-resilience demo: error: argument --restart:")
    assert repr(value) in line


def test_demo_dir_that_cannot_be_written() -> None:
    line = one_line_exit_2(run("-m", "ibkr_resilience", "demo", "--dir", "/proc/forbidden"))
    assert line.startswith("ibkr-resilience demo: error: --dir '/proc/forbidden': cannot write")


def test_demo_dir_that_is_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    line = one_line_exit_2(run("-m", "ibkr_resilience", "demo", "--dir", str(a_file)))
    assert "cannot write there" in line


def test_cli_without_a_command() -> None:
    line = one_line_exit_2(run("-m", "ibkr_resilience"))
    assert line.startswith("ibkr-resilience: error:")


def test_legacy_example_help_is_help() -> None:
    """``--help`` is a question, not a mistake: usage on stdout, exit 0, no traceback."""
    r = run(str(LEGACY), "--help")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("usage: legacy_connect.py")


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_legacy_example_bad_port(port: str) -> None:
    line = one_line_exit_2(run(str(LEGACY), port))
    assert line == f"legacy_connect.py: error: port {port!r}: expected an integer 1-65535"
