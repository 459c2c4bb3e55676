"""``ibkr-resilience check`` (and the package import) as a user runs them: subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ibkr_resilience.simulator import FakeGateway
from ibkr_resilience.testing import HttpServer

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ibkr_resilience", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IBKR_LOG_FORMAT": "json", **env},
    )


def test_check_ok_prints_one_line(fake_gateway: FakeGateway) -> None:
    r = run("check", "--port", str(fake_gateway.port))
    assert r.returncode == 0, r.stderr
    line, = r.stdout.splitlines()
    assert line.startswith(f"ok 127.0.0.1:{fake_gateway.port} server_version=157 ")
    assert "accounts=DU1234567 paper connect_ms=" in line
    # disconnected again (the gateway handles the close on its own thread: wait for it)
    assert fake_gateway.wait_for(lambda: fake_gateway.connected_client_ids() == [], timeout=5)
    assert fake_gateway.messages("startApi")[0].client_id == 99


def test_check_failure_names_the_class(fake_gateway: FakeGateway) -> None:
    fake_gateway.client_id_in_use()
    r = run("check", "--port", str(fake_gateway.port), "--once", "--timeout", "1")
    assert r.returncode == 1
    line, = r.stdout.splitlines()
    assert line.startswith("FAIL rejected: ") and "(1 attempt(s)" in line


def test_check_down_uses_the_environment() -> None:
    with FakeGateway() as gw:
        port = gw.port
    r = run("check", "--once", IBKR_PORT=str(port))
    assert r.returncode == 1
    assert r.stdout.startswith("FAIL refused: ConnectionRefusedError")


@pytest.mark.parametrize("name, value", [
    ("IBKR_CONNECT_TIMEOUT", "abc"),
    ("IBKR_PORT", "99999"),
    ("IBKR_CONNECT_MAX_RETRIES", "0"),
    ("IBKR_LOG_FORMAT", "xml"),
])
def test_check_bad_configuration_is_one_line_exit_2(name: str, value: str) -> None:
    r = run("check", "--once", **{name: value})
    assert r.returncode == 2
    assert name in r.stderr and repr(value) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_package_imports_with_a_bad_environment() -> None:
    r = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", "import ibkr_resilience"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "IBKR_CONNECT_TIMEOUT": "abc"},
    )
    assert r.returncode == 0, r.stderr


def test_check_does_not_ping_the_jobs_healthcheck(fake_gateway: FakeGateway) -> None:
    with HttpServer(path="/ping/0f0e-uuid") as server:
        r = run("check", "--port", str(fake_gateway.port), IBKR_HEALTHCHECK_URL=server.url)
    hits = [request.path for request in server.requests]
    assert r.returncode == 0, r.stderr
    assert hits == []
