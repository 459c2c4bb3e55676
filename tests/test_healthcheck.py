"""healthchecks.io-style pings around a session, against a real HTTP server on loopback."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ib_fakes import Factory, FakeIB
from loadslack import Load
from structlog.testing import capture_logs

from ibkr_resilience import (
    ConfigError,
    ConnectionFailed,
    LiveAccountRefused,
    SessionConfig,
    ibkr_session,
)
from ibkr_resilience._notify.healthcheck import Healthcheck
from ibkr_resilience.testing import (
    BlackHole,
    FakeTime,
    HttpServer,
    JsonLogCapture,
    RecordingAlert,
    closed_port_url,
)

UUID = "5f1c2a9e-3b7d-4e10-9c6a-0d2b8e4f7a13"


class PingServer(HttpServer):
    """A healthchecks.io stand-in: answers 200 "OK" to every ping."""

    def __init__(self) -> None:
        super().__init__([(200, b"OK")], path=f"/{UUID}")

    @property
    def hits(self) -> list[tuple[str, str, str]]:
        return [(r.method, r.route, r.text) for r in self.requests]

    @property
    def queries(self) -> list[dict[str, list[str]]]:
        return [r.query for r in self.requests]

    def paths(self) -> list[str]:
        return [path.removeprefix(f"/{UUID}") or "/" for _, path, _ in self.hits]


@pytest.fixture
def pings() -> Iterator[PingServer]:
    with PingServer() as server:
        yield server


@pytest.fixture
def black_hole() -> Iterator[str]:
    """Accepts TCP connections, never answers."""
    with BlackHole(path=f"/{UUID}") as hole:
        yield hole.url


@pytest.fixture
def refused() -> str:
    return closed_port_url(f"/{UUID}")


def session(url: str, factory: Any = None, **kw: Any) -> Any:
    ft = FakeTime()
    env = {"IBKR_HEALTHCHECK_URL": url, **kw.pop("env", {})}
    return ibkr_session(
        ib_factory=factory if factory is not None else Factory("ok"),
        alert=kw.pop("alert", RecordingAlert()),
        sleep=ft.sleep,
        clock=ft.clock,
        env=env,
        **kw,
    )


# -- what is pinged when -----------------------------------------------------------------


def test_success_pings_start_then_the_url(pings: PingServer) -> None:
    """``/start`` goes out in the background as the session begins, the URL at the end."""
    with session(pings.url) as ib:
        assert ib.isConnected()
        assert pings.wait_for_requests(1)
        assert pings.paths() == ["/start"]
    assert pings.paths() == ["/start", "/"]
    method, _, body = pings.hits[-1]
    assert method == "POST" and "outcome=ok" in body and "client_id=10" in body


def test_a_hanging_start_ping_never_delays_the_connect(black_hole: str) -> None:
    """The first attempt starts at once even when the monitoring endpoint never answers."""
    began = time.monotonic()
    called_at: list[float] = []

    def factory() -> FakeIB:
        called_at.append(time.monotonic())
        return FakeIB("ok")

    with capture_logs() as logs, session(black_hole, factory, env={"IBKR_ALERT_TIMEOUT": "1"}):
        pass
    assert called_at[0] - began < 0.5 < 1.0  # well before the ping's 1 s bound
    ended = [e["ping"] for e in logs if e["event"].startswith("ibkr.healthcheck.")]
    assert ended == ["start", "success"]  # the outcome still waited for /start


def test_each_session_ties_its_pings_with_one_run_id(pings: PingServer) -> None:
    for _ in range(2):
        with session(pings.url):
            pass
    rids = [q["rid"] for q in pings.queries]
    assert rids[0] == rids[1] and rids[2] == rids[3] and rids[0] != rids[2]
    assert all(len(r) == 1 and len(r[0]) == 36 for r in rids)


def test_give_up_pings_fail(pings: PingServer) -> None:
    with pytest.raises(ConnectionFailed), session(pings.url, Factory("refused"), max_attempts=2):
        pass
    assert pings.paths() == ["/start", "/fail"]
    assert "outcome=connect_failed" in pings.hits[-1][2]


def test_exception_in_block_pings_fail_and_propagates(pings: PingServer) -> None:
    with pytest.raises(ZeroDivisionError), session(pings.url):
        _ = 1 / 0
    assert pings.paths() == ["/start", "/fail"]
    assert "outcome=error" in pings.hits[-1][2]


@pytest.mark.parametrize("kind", ["drop", "live", "ctrl_c", "exit0", "exit1"])
def test_other_outcomes(pings: PingServer, kind: str) -> None:
    expected = "/"
    if kind == "drop":
        with session(pings.url) as ib:
            ib.drop()
        expected = "/fail"
    elif kind == "live":
        with pytest.raises(LiveAccountRefused), session(pings.url, Factory("ok", accounts=("U1",))):
            pass
        expected = "/fail"
    elif kind == "ctrl_c":
        with pytest.raises(KeyboardInterrupt), session(pings.url):
            raise KeyboardInterrupt
        expected = "/fail"
    elif kind == "exit0":
        with pytest.raises(SystemExit), session(pings.url):
            raise SystemExit(0)
    else:
        with pytest.raises(SystemExit), session(pings.url):
            raise SystemExit(2)
        expected = "/fail"
    assert pings.paths() == ["/start", expected]


def test_sigterm_in_block_pings_fail(pings: PingServer) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as info, session(pings.url):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted by the handler
    assert info.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is before
    assert pings.paths() == ["/start", "/fail"]
    assert "outcome=terminated" in pings.hits[-1][2]


def test_only_the_outermost_session_pings_unless_told(pings: PingServer) -> None:
    with session(pings.url) as outer:
        with pytest.raises(ConnectionFailed), session(pings.url, Factory("refused")):
            pass  # a helper session failing must not report the job as failed
        with session(pings.url, healthcheck=True):
            pass
        assert outer.isConnected()
    assert pings.paths() == ["/start", "/start", "/", "/"]
    with session(pings.url, healthcheck=False):
        pass
    assert len(pings.hits) == 4
    with session(pings.url):  # the depth counter is back to zero
        pass
    assert len(pings.hits) == 6


def test_no_url_no_ping(pings: PingServer) -> None:
    s = ibkr_session(ib_factory=Factory("ok"), alert=RecordingAlert(), env={})
    assert s.notifier.healthcheck is None
    with s:
        pass
    assert pings.hits == []


def test_an_error_status_is_logged_never_raised(pings: PingServer) -> None:
    pings.answer((404, b"OK"))
    with capture_logs() as logs, session(pings.url):
        pass
    failed = [e for e in logs if e["event"] == "ibkr.healthcheck.failed"]
    assert [(e["ping"], e["status"]) for e in failed] == [("start", 404), ("success", 404)]
    assert logs[-1]["event"] == "ibkr.session.end" and logs[-1]["outcome"] == "ok"


# -- bounded and swallowed ------------------------------------------------------------------


def test_black_holed_endpoint_costs_at_most_the_bound(black_hole: str) -> None:
    started = time.monotonic()
    with capture_logs() as logs, session(black_hole, env={"IBKR_ALERT_TIMEOUT": "0.3"}):
        pass
    elapsed = time.monotonic() - started
    assert elapsed < 2 * 0.3 + 0.4  # two pings, each abandoned at the bound
    # requests' own read timeout (inside the bound) or the hard bound ends each ping.
    ended = [e for e in logs if e["event"].startswith("ibkr.healthcheck.")]
    assert [e["ping"] for e in ended] == ["start", "success"]
    assert {e["event"] for e in ended} <= {"ibkr.healthcheck.failed", "ibkr.healthcheck.timed_out"}
    assert logs[-1]["outcome"] == "ok"


def test_black_holed_endpoint_on_give_up(black_hole: str) -> None:
    started = time.monotonic()
    with (
        pytest.raises(ConnectionFailed),
        session(black_hole, Factory("refused"), max_attempts=1, env={"IBKR_ALERT_TIMEOUT": "0.3"}),
    ):
        pass
    assert time.monotonic() - started < 2 * 0.3 + 0.4


def test_refused_endpoint_is_quick_and_logged(refused: str) -> None:
    started = time.monotonic()
    with capture_logs() as logs, session(refused):
        pass
    assert time.monotonic() - started < 1.0
    failed = [e for e in logs if e["event"] == "ibkr.healthcheck.failed"]
    # The pings go through http.client (keepalive.py): a refused connect is the OSError itself.
    assert [e["error_type"] for e in failed] == ["ConnectionRefusedError"] * 2
    assert logs[-1]["outcome"] == "ok"


# -- the URL is a secret ----------------------------------------------------------------


def test_uuid_never_reaches_the_logs(pings: PingServer, refused: str) -> None:
    with JsonLogCapture() as capture:
        with session(pings.url):
            pass
        with pytest.raises(ConnectionFailed), session(refused, Factory("refused"), max_attempts=1):
            pass
    text = capture.text
    lines = capture.records
    assert UUID not in text
    sent = [x for x in lines if x["event"] == "ibkr.healthcheck.sent"]
    port = pings.port
    assert [x["target"] for x in sent] == [
        f"http://127.0.0.1:{port}/.../start",
        f"http://127.0.0.1:{port}/...",
    ]
    [failed_start, failed_fail] = [x for x in lines if x["event"] == "ibkr.healthcheck.failed"]
    assert failed_fail["target"].endswith("/.../fail")
    assert failed_start["error_type"] == "ConnectionRefusedError"


def test_a_proxy_variable_sends_the_pings_through_requests_scrubbed(
    pings: PingServer, refused: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """http.client speaks to no proxy: with one configured, the pings go through
    ``requests`` (which honours it), whose texts quote the URL and are scrubbed."""
    monkeypatch.setenv("HTTP_PROXY", refused.rsplit("/", 1)[0])  # a proxy that refuses
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with JsonLogCapture() as capture, session(pings.url):
        pass
    lines = capture.records
    assert UUID not in capture.text
    assert pings.requests == []  # nothing went around the proxy
    failed = [x for x in lines if x["event"] == "ibkr.healthcheck.failed"]
    assert [x["error_type"] for x in failed] == ["ProxyError", "ProxyError"]
    # The place the URL would leak through was really exercised, and scrubbed:
    # requests' exception text quotes the whole URL.
    assert "[REDACTED]" in failed[0]["error"]


def test_url_is_hidden_in_repr_and_config_errors() -> None:
    url = f"https://hc-ping.com/{UUID}"
    cfg = SessionConfig.from_env({"IBKR_HEALTHCHECK_URL": url + "/"})
    assert cfg.healthcheck_url == url and UUID not in repr(cfg)
    check = Healthcheck(url, 1.0)
    assert UUID not in repr(check) and check.target("fail") == "https://hc-ping.com/.../fail"
    for bad in (
        f"hc-ping.com/{UUID}",
        f"ftp://hc-ping.com/{UUID}",
        "https://",
        f"https://hc-ping.com:port/{UUID}",
        f"https:// /{UUID}",
    ):
        with pytest.raises(ConfigError) as info:
            SessionConfig.from_env({"IBKR_HEALTHCHECK_URL": bad})
        message = str(info.value)
        assert message.startswith("IBKR_HEALTHCHECK_URL (value hidden): expected an http")
        assert UUID not in message


def test_the_hard_bound_holds_when_requests_does_not() -> None:
    """``requests`` timeouts miss DNS resolution: a ping stuck there is abandoned."""
    release = threading.Event()

    def stuck(*args: Any, **kw: Any) -> Any:
        release.wait(10)

    check = Healthcheck(f"https://hc-ping.invalid/{UUID}", 0.2, post=stuck)
    load = Load()
    started = time.monotonic()
    try:
        with capture_logs() as logs:
            assert check.ping("fail", "x") == "timed_out"
    finally:
        release.set()
    assert time.monotonic() - started < 0.2 + load.slack(0.4), load
    assert logs[0]["event"] == "ibkr.healthcheck.timed_out"
    assert logs[0]["target"] == "https://hc-ping.invalid/.../fail"


def test_a_query_in_the_url_is_kept_and_the_suffix_goes_in_the_path(pings: PingServer) -> None:
    check = Healthcheck(pings.url + "?create=0", 1.0)
    assert check.ping("fail", "x", "rid-1") == "sent"
    assert pings.hits == [("POST", f"/{UUID}/fail", "x")]
    assert pings.queries == [{"create": ["0"], "rid": ["rid-1"]}]
