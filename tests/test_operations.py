"""docs/operations.md's recipes, run as written.

The crontab lines are read from ``docs/examples/crontab.example`` and run the way cron
runs them: cron's own ``%`` rule applied (``\\%`` is a literal ``%``), then
``env -i HOME=<tmp> PATH=/usr/bin:/bin sh -c '<the line>'``. The only substitutions are the
install paths (``/opt/ibkr`` -> this checkout and its interpreter, ``/etc/ibkr/env``,
``/var/lib/ibkr``, ``/var/log/ibkr`` -> a temporary directory). The env file is
``docs/examples/ibkr.env.example`` with the same substitutions and the simulator's port.
The systemd units are checked with ``systemd-analyze verify`` (skipped where it is not
installed), and the service's ``ExecStart`` is run with systemd's ``$$``/``%%`` unescaped.
"""

from __future__ import annotations

import fcntl
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ibkr_resilience.simulator import FakeGateway

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "docs" / "examples"
PYTHON = Path(sys.executable)
CONSOLE_SCRIPT = PYTHON.parent / "ibkr-resilience"


@dataclass
class Install:
    root: Path

    @property
    def env_file(self) -> Path:
        return self.root / "etc" / "env"

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    def paths(self, text: str) -> str:
        """Only the install paths are replaced; everything else is as documented."""
        for old, new in [
            ("/opt/ibkr/.venv/bin/python", str(PYTHON)),
            ("/opt/ibkr/.venv/bin/ibkr-resilience", str(CONSOLE_SCRIPT)),
            ("/opt/ibkr", str(REPO)),
            ("/etc/ibkr/env", str(self.env_file)),
            ("/var/lib/ibkr", str(self.lib)),
            ("/var/log/ibkr", str(self.logs)),
        ]:
            text = text.replace(old, new)
        return text

    def write_env(self, port: int, **extra: str) -> None:
        text = self.paths((EXAMPLES / "ibkr.env.example").read_text())
        text, n = re.subn(r"(?m)^IBKR_PORT=.*$", f"IBKR_PORT={port}", text)
        assert n == 1
        text += "".join(f"{k}={v}\n" for k, v in extra.items())
        self.env_file.write_text(text)

    def log_records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in (self.logs / "ibkr.jsonl").read_text().splitlines()]


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    inst = Install(tmp_path)
    for d in (inst.env_file.parent, inst.lib / "plans", inst.logs):
        d.mkdir(parents=True)
    yield inst


def crontab_command(name: str) -> str:
    """The command of the crontab line that runs ``name``, after cron's ``%`` handling."""
    commands = []
    for line in (EXAMPLES / "crontab.example").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):  # a variable line (MAILTO=...)
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, line
        commands.append(fields[5])
    found = [c for c in commands if name in c]
    assert len(found) == 1, (name, commands)
    assert not re.search(r"(?<!\\)%", found[0]), "an unescaped % would end the command"
    return found[0].replace("\\%", "%")


def run_like_cron(install: Install, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "env",
            "-i",
            f"HOME={install.root}",
            "PATH=/usr/bin:/bin",
            "sh",
            "-c",
            install.paths(command),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=install.root,
    )


def todays_plan(install: Install) -> Path:
    today = subprocess.run(
        ["env", "-i", "date", "+%F"], capture_output=True, text=True, check=True
    ).stdout.strip()
    plan = install.lib / "plans" / f"orders-{today}.csv"
    shutil.copy(EXAMPLES / "plan.csv", plan)
    return plan


def test_env_example_has_no_secret_filled_in() -> None:
    text = (EXAMPLES / "ibkr.env.example").read_text()
    assert not re.search(
        r"(?m)^(IFDS_TELEGRAM_BOT_TOKEN|IFDS_TELEGRAM_CHAT_ID|"
        r"IBKR_HEALTHCHECK_URL)=",
        text,
    )


def test_crontab_submit_line_runs_as_written(install: Install) -> None:
    todays_plan(install)
    with FakeGateway() as gw:
        install.write_env(gw.port)
        r = run_like_cron(install, crontab_command("submit_orders.py"))
        placed = gw.messages("placeOrder")
    # A good run leaves cron nothing to mail.
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert placed and {m.client_id for m in placed} == {10}
    summary = (install.logs / "submit_orders.out").read_text()
    assert "; exit 0" in summary
    journal = [json.loads(x) for x in (install.lib / "journal.jsonl").read_text().splitlines()]
    outcomes = {rec["event"] for rec in journal} - {"run.start", "order.sending"}
    assert journal and outcomes == {"order.submitted"}
    records = install.log_records()
    events = [rec["event"] for rec in records]
    assert "ibkr.connect.success" in events
    end = [rec for rec in records if rec["event"] == "script.end"]
    assert len(end) == 1 and end[0]["exit_code"] == 0


def test_crontab_failure_mails_the_errors_and_the_exit_code(install: Install) -> None:
    todays_plan(install)
    with FakeGateway() as gw:
        port = gw.port
    install.write_env(port, IBKR_CONNECT_MAX_TIME="1")  # the gateway is down
    r = run_like_cron(install, crontab_command("submit_orders.py"))
    assert r.stdout == ""
    mail = r.stderr.splitlines()
    assert mail[-1] == "submit_orders: exit 1"
    assert any(line.startswith("submit_orders.py: error: could not connect") for line in mail)
    json_lines = [json.loads(line) for line in mail if line.startswith("{")]
    assert json_lines and {rec["level"] for rec in json_lines} <= {"warning", "error"}
    assert len(json_lines) + 2 == len(mail)
    ends = [rec for rec in install.log_records() if rec["event"] == "script.end"]
    assert ends[-1]["exit_code"] == 1


def test_crontab_line_skips_while_the_previous_run_holds_the_lock(install: Install) -> None:
    todays_plan(install)
    with FakeGateway() as gw:
        install.write_env(gw.port)
        with open(install.lib / "submit_orders.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            r = run_like_cron(install, crontab_command("submit_orders.py"))
        assert gw.connection_count() == 0 and not gw.messages()
    assert (r.stdout, r.stderr) == ("", "submit_orders: exit 75\n")
    assert not (install.lib / "journal.jsonl").exists()


def test_crontab_close_line_runs_as_written(install: Install) -> None:
    with FakeGateway() as gw:
        install.write_env(gw.port)
        r = run_like_cron(install, crontab_command("close_positions.py"))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert "; exit 0" in (install.logs / "close_positions.out").read_text()


def test_crontab_preflight_mails_only_a_failure(install: Install) -> None:
    with FakeGateway() as gw:
        install.write_env(gw.port)
        ok = run_like_cron(install, crontab_command("ibkr-resilience check"))
        assert gw.messages("startApi")[0].client_id == 99
    assert (ok.stdout, ok.stderr) == ("", "")
    with FakeGateway(accounts=["U7654321"]) as live:
        install.write_env(live.port)
        bad = run_like_cron(install, crontab_command("ibkr-resilience check"))
    assert bad.stderr == ""
    assert bad.stdout.startswith("FAIL live_account: accounts=U7654321")
    assert not (install.logs / "ibkr.jsonl").exists()  # a probe stays out of the job's log


# --------------------------------------------------------------------------- systemd
def unit_dir(install: Install) -> Path:
    d = install.root / "units"
    d.mkdir(exist_ok=True)
    for name in ("ibkr-submit.service", "ibkr-submit.timer"):
        (d / name).write_text(install.paths((EXAMPLES / name).read_text()))
    return d


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed on this machine",
)
def test_systemd_units_verify(install: Install) -> None:
    d = unit_dir(install)
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "ibkr-submit.service", "ibkr-submit.timer"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=d,
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    timer = (d / "ibkr-submit.timer").read_text()
    assert re.search(r"(?m)^Unit=ibkr-submit\.service$", timer)
    calendar = re.search(r"(?m)^OnCalendar=(.*)$", timer)
    assert calendar
    r = subprocess.run(
        ["systemd-analyze", "calendar", calendar.group(1)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "Mon..Fri *-*-* 06:00:00" in r.stdout


def test_systemd_exec_start_runs(install: Install) -> None:
    """The service's command line with systemd's escapes undone, the EnvironmentFile's
    variables as the only environment (systemd reads KEY=value lines the same way)."""
    service = install.paths((EXAMPLES / "ibkr-submit.service").read_text())
    exec_start = re.search(r"(?m)^ExecStart=(.*)$", service)
    assert exec_start and "EnvironmentFile=" + str(install.env_file) in service
    argv = shlex.split(exec_start.group(1).replace("$$", "$").replace("%%", "%"))
    todays_plan(install)
    with FakeGateway() as gw:
        install.write_env(gw.port)
        env = {"HOME": str(install.root), "PATH": "/usr/bin:/bin"}
        for line in install.env_file.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
        r = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=180, cwd=install.lib
        )
        assert gw.messages("placeOrder")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == "" and "; exit 0" in r.stdout
