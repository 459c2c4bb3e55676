"""The main job on a fresh machine: ``ibkr-resilience demo`` end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_offline_and_shows_the_three_promises(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "ibkr_resilience", "demo", "--restart", "2", "--dir", str(work)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "run 2: exit 0; 0 order(s) placed" in out
    assert "0 open order(s) and 0 position(s) left" in out
    assert out.rstrip().splitlines()[-1].startswith("OK: demo finished in ")
    seconds = float(out.rstrip().splitlines()[-1].split()[-2])
    assert seconds < 30

    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    refused = [
        x for x in log if x["event"] == "ibkr.connect.failed" and x["failure_class"] == "refused"
    ]
    assert len(refused) >= 3  # ~2 s closed, retried every 0.5 s
    first_success = next(x for x in log if x["event"] == "ibkr.connect.success")
    assert first_success["attempt"] == len(refused) + 1

    journal = [json.loads(line) for line in (work / "journal.jsonl").read_text().splitlines()]
    events = [j["event"] for j in journal]
    assert events.count("order.submitted") == 5 + 2  # 5 plan rows, then 2 closing orders
    assert events.count("order.skipped") == 5
    # the console log (stderr) is readable, not JSON, and shows the refused attempts
    assert "ibkr.connect.failed" in r.stderr and not r.stderr.lstrip().startswith("{")
    # everything the demo writes stays in its directory: the run lock too
    assert list(home.rglob("*")) == []
    kept = [p.name for p in (work / "state" / "ibkr_resilience").iterdir()]
    assert kept and all(name.startswith("lock-") for name in kept), kept
