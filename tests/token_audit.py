"""The bot token never appears in any output of any fault-matrix row: one audit for all.

Design. Each row of the fault matrix (``tests/test_fault_matrix*.py``) runs the job as
cron does and leaves outputs in four places: the process's stdout and stderr, files in
the row's ``tmp_path`` (the JSON log, the journal, the alert de-dup state, the metrics,
a background job's ``stdout.txt``/``stderr.txt``), and what the loopback servers received
(the Bot API, the healthcheck, a black hole). Rather than a ``no_secret_leaked`` call in
each row (easy to forget in the next row), the outputs are collected as the rows run and
grepped once:

* the row helpers (``run_job``, ``Running.wait``) hand each process's stdout and stderr
  to :data:`AUDIT` (:meth:`OutputAudit.process`);
* the autouse fixture :func:`token_audit_row`, active in the fault-matrix modules only,
  takes after each row (passed or failed) every regular file under its ``tmp_path`` and
  every request any server fixture of the row received (an ``HttpServer``'s path,
  headers and body, a ``BlackHole``'s bytes), with the one legitimate place of the token removed:
  the ``/bot<token>/`` of a Bot API request path;
* :data:`AUDIT_TEST` (in ``test_fault_matrix_loud.py``) is moved to the end of the run by
  :func:`pytest_collection_modifyitems` and asserts that no collected text holds the
  token's secret part, that every fault-matrix row selected in this session was audited
  (the set of node ids, not a count), and that each audited row ran a process.

Selected alone, the audit test skips (there is nothing to audit).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ibkr_resilience.testing import BlackHole, HttpServer

TOKEN = "424242:FaultMatrixToken_not-real"
"""The Bot API token every fault-matrix row runs with."""
SECRET = TOKEN.partition(":")[2]
"""The part that must never be seen: stricter than the whole token (a half-scrubbed token
or the bare secret is a leak too)."""
BOT_PATH = f"/bot{TOKEN}/"
"""Where the token belongs: the path of a Bot API request, and nowhere else."""
AUDIT_TEST = "test_no_output_of_any_row_holds_the_token"
MODULE_PREFIX = "test_fault_matrix"
MAX_FILE_BYTES = 64 * 1024 * 1024
"""A larger file in a row's tmp_path is a test's own fixture (a sparse file), not output."""


@dataclass
class Row:
    """The outputs of one fault-matrix test."""

    nodeid: str
    processes: int = 0
    sources: dict[str, bytes] = field(default_factory=dict)


@dataclass
class OutputAudit:
    """Outputs of the session's fault-matrix rows, collected as they run."""

    rows: list[Row] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)
    """Node ids of the fault-matrix rows selected in this session (set at collection)."""
    _pending: list[tuple[str, str]] = field(default_factory=list)

    def process(self, stdout: str, stderr: str) -> None:
        """One process of the current row ended with these outputs."""
        self._pending.append((stdout, stderr))

    def finish_row(self, nodeid: str, tmp_path: Path | None, servers: Sequence[object]) -> None:
        row = Row(nodeid, processes=len(self._pending))
        for n, (out, err) in enumerate(self._pending):
            row.sources[f"process {n} stdout"] = out.encode()
            row.sources[f"process {n} stderr"] = err.encode()
        self._pending.clear()
        if tmp_path is not None:
            for path in sorted(tmp_path.rglob("*")):
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_FILE_BYTES:
                    row.sources[f"file {path.relative_to(tmp_path)}"] = path.read_bytes()
        for server in servers:
            name = type(server).__name__
            if isinstance(server, HttpServer):
                for n, request in enumerate(server.requests):
                    where = request.path.replace(BOT_PATH, "/bot<token>/", 1)
                    head = f"{where}\n{request.headers}\n".encode()
                    row.sources[f"{name} request {n}"] = head + request.body
            elif isinstance(server, BlackHole):
                row.sources[f"{name} bytes"] = server.received.replace(
                    BOT_PATH.encode(), b"/bot<token>/"
                )
        self.rows.append(row)

    def leaks(self) -> list[str]:
        """``<row>: <source>`` for every collected text that holds the secret."""
        needle = SECRET.encode()
        return [
            f"{row.nodeid}: {source}"
            for row in self.rows
            for source, data in row.sources.items()
            if needle in data
        ]


AUDIT = OutputAudit()


def _is_row(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    name = getattr(module, "__name__", "")
    fixtures = getattr(item, "fixturenames", ())
    return name.startswith(MODULE_PREFIX) and item.name != AUDIT_TEST and "tmp_path" in fixtures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the audit after every other test; note which rows it must have seen."""
    audit = [item for item in items if item.name == AUDIT_TEST]
    items[:] = [item for item in items if item.name != AUDIT_TEST] + audit
    AUDIT.expected = {item.nodeid for item in items if _is_row(item)}


@pytest.fixture(autouse=True)
def token_audit_row(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each fault-matrix row: hand its files and server requests to :data:`AUDIT`."""
    yield
    if not _is_row(request.node):
        return
    funcargs = getattr(request.node, "funcargs", {})
    tmp_path = funcargs.get("tmp_path")
    servers = [v for v in funcargs.values() if isinstance(v, HttpServer | BlackHole)]
    AUDIT.finish_row(request.node.nodeid, tmp_path, servers)
