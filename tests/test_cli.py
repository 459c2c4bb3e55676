"""``ibkr-resilience check`` (and the package import) as a user runs them: subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loadslack import Load

from ibkr_resilience.simulator import FakeGateway
from ibkr_resilience.testing import HttpServer

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ibkr_resilience", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IBKR_LOG_FORMAT": "json", **env},
    )


def test_check_ok_prints_one_line(fake_gateway: FakeGateway) -> None:
    r = run("check", "--port", str(fake_gateway.port))
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    assert line.startswith(f"ok 127.0.0.1:{fake_gateway.port} server_version=157 ")
    assert "accounts=DU1234567 paper connect_ms=" in line
    # disconnected again (the gateway handles the close on its own thread: wait for it)
    assert fake_gateway.wait_for(lambda: fake_gateway.connected_client_ids() == [], timeout=5)
    assert fake_gateway.messages("startApi")[0].client_id == 99


@pytest.mark.parametrize("stdout", ["closed pipe", "full disk"])
def test_check_answers_with_its_code_when_stdout_cannot_be_written(
    fake_gateway: FakeGateway, stdout: str
) -> None:
    """``check | true`` (the reader gone) or ``check > /dev/full``: exit 0 all the same,
    no traceback (a monitoring script reads the code; found by a newcomer: exit 1)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    target = write_end if stdout == "closed pipe" else os.open("/dev/full", os.O_WRONLY)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "ibkr_resilience", "check", "--port", str(fake_gateway.port)],
            cwd=REPO,
            stdout=target,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
    finally:
        os.close(write_end)
        if target != write_end:
            os.close(target)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_check_failure_names_the_class(fake_gateway: FakeGateway) -> None:
    fake_gateway.client_id_in_use()
    r = run("check", "--port", str(fake_gateway.port), "--once", "--timeout", "1")
    assert r.returncode == 1
    (line,) = r.stdout.splitlines()
    assert line.startswith("FAIL rejected: ") and "(1 attempt(s)" in line


def test_check_reports_an_ib_outage_within_its_timeout(fake_gateway: FakeGateway) -> None:
    """A gateway in IB's nightly reset (1100 at connect): the one attempt is reported as
    ``ib_offline`` within ``--timeout``, not after the job's whole connect budget (was
    120 s for ``--timeout 3``)."""
    fake_gateway.ib_offline(3600)
    load = Load()
    r = run("check", "--port", str(fake_gateway.port), "--timeout", "1")
    assert r.returncode == 1, r.stderr
    (line,) = r.stdout.splitlines()
    assert line.startswith("FAIL ib_offline: ") and "(1 attempt(s)" in line
    elapsed = float(line.rsplit(", ", 1)[1].removesuffix(" s)"))
    assert elapsed <= 1 + load.slack(0.5), (line, load)


def test_check_down_uses_the_environment() -> None:
    with FakeGateway() as gw:
        port = gw.port
    r = run("check", "--once", IBKR_PORT=str(port))
    assert r.returncode == 1
    assert r.stdout.startswith("FAIL refused: ConnectionRefusedError")


@pytest.mark.parametrize(
    "name, value",
    [
        ("IBKR_CONNECT_TIMEOUT", "abc"),
        ("IBKR_PORT", "99999"),
        ("IBKR_CONNECT_MAX_RETRIES", "0"),
        ("IBKR_LOG_FORMAT", "xml"),
    ],
)
def test_check_bad_configuration_is_one_line_exit_2(name: str, value: str) -> None:
    r = run("check", "--once", **{name: value})
    assert r.returncode == 2
    assert name in r.stderr and repr(value) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize("command", [["check", "--once"], ["demo"]])
def test_a_bad_client_library_is_one_line_exit_2(command: list[str]) -> None:
    """IBKR_CLIENT_LIBRARY is read where the client library loads: inside the command,
    so it is one line like any other setting (it was a traceback at the import)."""
    r = run(*command, IBKR_CLIENT_LIBRARY="ib_nonesuch")
    assert r.returncode == 2, r.stderr
    assert r.stderr == (
        f"ibkr-resilience {command[0]}: error: IBKR_CLIENT_LIBRARY='ib_nonesuch': "
        "expected ib_insync or ib_async\n"
    )


def test_package_imports_with_a_bad_environment() -> None:
    r = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", "import ibkr_resilience"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "IBKR_CONNECT_TIMEOUT": "abc"},
    )
    assert r.returncode == 0, r.stderr


def test_check_does_not_ping_the_jobs_healthcheck(fake_gateway: FakeGateway) -> None:
    with HttpServer(path="/ping/0f0e-uuid") as server:
        r = run("check", "--port", str(fake_gateway.port), IBKR_HEALTHCHECK_URL=server.url)
    hits = [request.path for request in server.requests]
    assert r.returncode == 0, r.stderr
    assert hits == []


# --------------------------------------------------------------------- a quick pre-flight
def _closed_port() -> int:
    with FakeGateway() as gw:
        return gw.port


def test_check_on_a_closed_port_is_one_quick_quiet_line() -> None:
    """The default is ONE bounded attempt: a refused port answers at once, so the whole
    run (interpreter start included) ends well inside the 15 s per-attempt bound."""
    started = time.monotonic()
    r = run("check", "--port", str(_closed_port()))
    elapsed = time.monotonic() - started
    assert r.returncode == 1
    assert r.stderr == ""
    (line,) = r.stdout.splitlines()
    assert line.startswith("FAIL refused: ") and "(1 attempt(s), " in line
    assert elapsed < 15, elapsed


def test_check_stays_quiet_whatever_the_jobs_log_settings(tmp_path: Path) -> None:
    """A HEALTHCHECK every 30 s must not write into the job's log (IBKR_LOG_FILE)."""
    log_file = tmp_path / "job.log"
    r = run(
        "check",
        "--port",
        str(_closed_port()),
        IBKR_LOG_FILE=str(log_file),
        IBKR_LOG_STDERR_LEVEL="DEBUG",
    )
    assert r.returncode == 1 and r.stderr == ""
    assert not log_file.exists()


def test_check_verbose_puts_the_json_log_on_stderr() -> None:
    r = run("check", "-v", "--port", str(_closed_port()))
    assert r.returncode == 1
    assert len(r.stdout.splitlines()) == 1
    events = [json.loads(line)["event"] for line in r.stderr.splitlines()]
    assert events.count("ibkr.connect.attempt") == 1
    assert "ibkr.connect.gave_up" in events and events[-1] == "ibkr.session.end"


def test_check_live_account_exits_4() -> None:
    with FakeGateway(accounts=["U7654321"]) as gw:
        r = run("check", "--port", str(gw.port))
        assert gw.connected_client_ids() == []
    assert r.returncode == 4 and r.stderr == ""
    (line,) = r.stdout.splitlines()
    assert line.startswith("FAIL live_account: accounts=U7654321")


def test_check_live_account_allowed_is_ok_and_says_live() -> None:
    with FakeGateway(accounts=["U7654321"]) as gw:
        r = run("check", "--port", str(gw.port), IBKR_ALLOW_LIVE="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert " accounts=U7654321 LIVE connect_ms=" in r.stdout


def test_check_wait_rides_out_a_restart() -> None:
    """``--wait`` retries within its budget: the port is closed until the check's log
    shows a refused attempt, then it opens and the same check connects."""
    with FakeGateway() as gw:
        gw.down()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ibkr_resilience",
                "check",
                "-v",
                "--wait",
                "60",
                "--port",
                str(gw.port),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IBKR_LOG_FORMAT": "json"},
        )
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                record = json.loads(line)
                if record.get("failure_class") == "refused":
                    break
            gw.up()
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.startswith(f"ok 127.0.0.1:{gw.port} ")


@pytest.mark.parametrize("args", [["--wait", "-1"], ["--timeout", "0"], ["--wait", "soon"]])
def test_check_bad_arguments_are_one_line_exit_2(args: list[str]) -> None:
    r = run("check", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("ibkr-resilience check: error:")


def test_check_of_a_login_with_paper_and_live_accounts_says_both() -> None:
    with FakeGateway(accounts=["DU1234567", "U7654321"]) as gw:
        r = run("check", "--port", str(gw.port))
    assert r.returncode == 0, r.stdout + r.stderr
    assert " accounts=DU1234567,U7654321 paper+LIVE connect_ms=" in r.stdout
