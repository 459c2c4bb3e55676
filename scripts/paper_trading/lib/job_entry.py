"""Find a job's ``main`` in the package, from a checkout whether it is installed or not.

The cron wrappers ``submit_orders.py`` and ``close_positions.py`` must run the same code
as the installed package (and ``ibkr-resilience demo``), yet also run straight from a
checkout on a machine where nobody ran ``pip install``. This module imports only the
standard library, so the wrappers can load it before the package is on the path.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[3]
"""The repository root: ``scripts/paper_trading/lib/`` is three levels below it."""


def job_main(job: str, *, process_start: bool = False) -> Callable[[], int]:
    """``ibkr_resilience._app.jobs.<job>.main``; the checkout's copy if none is installed.

    ``process_start``: the wrapper is the process's main program (cron started it), so
    the import is made with the garbage collector paused and then frozen
    (:func:`_imports_kept`); a program that merely imports the wrapper keeps its heap as
    it was.

    A setting read when the job's modules load the client library
    (``IBKR_CLIENT_LIBRARY``) can already fail there: then the returned ``main`` reports
    it the way the job reports every bad setting, one line on stderr, the run alert and
    the failure ping, exit 2.
    """
    module = f"ibkr_resilience._app.jobs.{job}"
    try:
        with _imports_kept() if process_start else contextlib.nullcontext():
            try:
                loaded = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != "ibkr_resilience":
                    raise
                sys.path.insert(0, str(CHECKOUT))
                loaded = importlib.import_module(module)
    except Exception as exc:
        errors = sys.modules.get("ibkr_resilience.errors")
        if errors is None or not isinstance(exc, errors.ConfigError):
            raise
        return _refuse(exc)
    main: Callable[[], int] = loaded.main
    return main


@contextlib.contextmanager
def _imports_kept() -> Iterator[None]:
    """Import with the cyclic garbage collector paused, then freeze what was imported.

    Why: the modules, classes and functions an import creates live until the process
    ends, yet the collector walks them again and again while a cron run imports (about
    a tenth of a 1-row run's instructions) and once more when the interpreter exits.
    ``gc.freeze()`` moves them out of its reach; reference counting still frees them,
    and collection of what the run creates afterwards is unchanged.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def _refuse(error: Exception) -> Callable[[], int]:
    def main() -> int:
        script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
        print(f"{script}: error: {error}", file=sys.stderr)
        _report(script, str(error))
        return 2

    return main


def _report(script: str, reason: str) -> None:
    """The failing run is loud all the same: its ``script.end`` log line, the run alert
    and the failure ping, whose code needs no client library (best effort: this run is
    already failing)."""
    logging_ready = False
    try:
        from ibkr_resilience._core.log import get_logger
        from ibkr_resilience._core.logconfig import configure_logging

        configure_logging(file=_log_file_option(sys.argv[1:]), script=script)
        logging_ready = True
        get_logger("ibkr_resilience.script").error(
            "script.end", exit_code=2, outcomes={}, reason=reason
        )
    except Exception:  # a bad log setting too: the stderr line is already out
        pass
    try:
        from ibkr_resilience._app.jobs.run_alerts import RunAlerts

        alerts = RunAlerts(script, os.environ)
        alerts.start()
        alerts.finish(2, reason, reason, gateway=None, alerted=False, logging_ready=logging_ready)
    except Exception:  # nothing else is left to report with
        pass


def _log_file_option(argv: list[str]) -> str | None:
    """``--log-file PATH`` (or ``--log-file=PATH``) from a command line the job could not
    parse itself (its module did not load)."""
    for i, arg in enumerate(argv):
        if arg == "--log-file" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--log-file="):
            return arg.partition("=")[2]
    return None


_ended = [False]


def early_signals() -> None:
    """From the wrapper's first line (before the package is imported, ~0.2 s): SIGTERM,
    SIGHUP and SIGINT (Ctrl-C) end the process with 128 + the signal, as the run's own
    guard does later, instead of killing it or printing a ``KeyboardInterrupt``
    traceback from inside an import; signals the parent ignores (``nohup``, a
    background job's SIGINT) stay ignored. The run's guard takes over from here, and
    puts this handler back when it is done."""
    for name, default in (
        ("SIGTERM", signal.SIG_DFL),
        ("SIGHUP", signal.SIG_DFL),
        ("SIGINT", signal.default_int_handler),
    ):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) == default:
            signal.signal(signum, _early)


def _early(signum: int, frame: object) -> None:
    if not _ended[0]:
        # Ignored from now on: the process is ending, and Python's shutdown puts the
        # default action back for a signal with a Python handler (a repeated SIGTERM
        # would then kill it, -15, after all).
        _ignore_signals()
        raise SystemExit(128 + signum)


def _ignore_signals() -> None:
    for name in ("SIGTERM", "SIGHUP", "SIGINT"):
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, signal.SIG_IGN)


def ended(code: int) -> int:
    """Return ``code`` once the run has reported it; from here to the process's end a
    late SIGTERM, SIGHUP or SIGINT is ignored, so the process exits with the documented
    code rather than "killed by signal" (a supervisor repeating its SIGTERM)."""
    _ended[0] = True
    _ignore_signals()
    return code
