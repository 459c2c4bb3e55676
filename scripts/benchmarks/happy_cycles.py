"""One process's happy paths: raw connect+disconnect vs ``ibkr_session`` enter+exit.

Usage (run by bench.py; the gateway is in another process):
    python scripts/benchmarks/happy_cycles.py PORT LOG_FILE STATE_DIR
        [--healthcheck-url URL] [--contenders raw,session,session_hc]
        [--blocks 10] [--block 20] [--warmup 5] [--log-level INFO]

Logging is the cron setup: JSON lines to LOG_FILE, stderr at WARNING. The sessions
have Telegram configured (a token and chat id, never used on the happy path) so the
alert de-duplication state under STATE_DIR is what a real run reads; ``session_hc``
also has ``IBKR_HEALTHCHECK_URL``. Prints one JSON object: contender -> seconds per
cycle. Contenders run in alternating blocks (the first cycle of each block dropped:
it pays for the previous contender's pending socket close).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ibkr_resilience import configure_logging, ibkr_session
from ibkr_resilience._connect.compat import IB

TELEGRAM = {
    "IFDS_TELEGRAM_BOT_TOKEN": "123456:bench-token-never-sent-abcdefghijklmn",
    "IFDS_TELEGRAM_CHAT_ID": "42",
    "IFDS_TELEGRAM_API_URL": "http://127.0.0.1:9",
}


def contenders(port: int, state: str, healthcheck_url: str | None) -> dict[str, Callable[[], None]]:
    env = {**TELEGRAM, "IBKR_ALERT_STATE_FILE": os.path.join(state, "alert_state.json")}
    env_hc = {**env, "IBKR_HEALTHCHECK_URL": healthcheck_url or ""}

    def raw() -> None:
        ib = IB()
        ib.connect("127.0.0.1", port, clientId=10, timeout=60)
        ib.disconnect()

    def session() -> None:
        with ibkr_session(10, "127.0.0.1", port, timeout=60, env=env):
            pass

    def session_hc() -> None:
        with ibkr_session(10, "127.0.0.1", port, timeout=60, env=env_hc):
            pass

    return {"raw": raw, "session": session, "session_hc": session_hc}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("log_file")
    ap.add_argument("state_dir")
    ap.add_argument("--healthcheck-url")
    ap.add_argument("--contenders", default="raw,session")
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--block", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--log-level", default="INFO", help="WARNING: what the log lines cost")
    args = ap.parse_args()
    devnull = open(os.devnull, "w")  # noqa: SIM115  (stderr sink: WARNING only, kept open)
    configure_logging(
        format="json",
        level=args.log_level,
        file=args.log_file,
        stream=devnull,
        script="bench",
        env={},
    )
    every = contenders(args.port, args.state_dir, args.healthcheck_url)
    chosen = {name: every[name] for name in args.contenders.split(",")}
    for run in chosen.values():
        for _ in range(args.warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in chosen}
    for _ in range(args.blocks):
        for name, run in chosen.items():
            block = []
            for _ in range(args.block):
                t0 = time.perf_counter()
                run()
                block.append(time.perf_counter() - t0)
            times[name] += block[1:] if args.block > 1 else block
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
