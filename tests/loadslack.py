"""Time bounds that hold on a loaded machine: the slack is measured, not assumed.

A wall-clock bound on a job covers two kinds of time: what the product *waits* (a timeout,
an ack deadline, a retry interval: timers, which a busy machine barely stretches) and the
CPU work around the wait (imports, the client library's handshake, the alert's HTTP round
trip), which a busy machine stretches by as much as it is busy: with 4 busy loops on the
2 cores, the 65 ms alert path took 500-650 ms. A fixed slack is either loose on an idle
machine or fails on a busy one. So a bound here is what the product waits, plus an
*idle-machine* slack multiplied by how many times slower CPU work runs right now, measured
by this process just before and just after the job (:class:`Load`). On an idle machine the
factor is about 1 and the bound is as tight as the fixed one was; under load it widens in
proportion to the measured slowdown, no more. Where the question is "fast or waited out"
rather than "how long", the rows make the wait long instead (a 5 s attempt timeout, a 10 s
alert timeout) so that the two outcomes stay far apart at any plausible slowdown.

Clocks: the simulated gateway stamps its records with ``time.monotonic()``; the job's log
lines carry wall-clock timestamps. :func:`wall_clock` converts the first to the second
(both are system-wide clocks; the offset is taken in this process).
"""

from __future__ import annotations

import time

__all__ = ["Load", "cpu_slowdown", "wall_clock"]

_SAMPLE_CPU_S = 0.03  # shorter samples read low: a woken process runs first for a while


def cpu_slowdown(cpu_s: float = _SAMPLE_CPU_S) -> float:
    """How many times longer CPU work takes right now than on an idle core (>= 1.0).

    Spins until this thread has used ``cpu_s`` seconds of CPU (``time.thread_time``) and
    returns the wall time that took over ``cpu_s``: 1.0 on an idle machine, about N/2 with
    N runnable processes on 2 cores. Costs ``cpu_s`` of CPU (30 ms by default).
    """
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    while time.thread_time() - cpu0 < cpu_s:
        pass
    return max(1.0, (time.perf_counter() - wall0) / (time.thread_time() - cpu0))


class Load:
    """The machine's slowdown around one job: create before starting it, ask after.

    ``slack(idle_s)`` is ``idle_s`` (the slack the bound had on an idle machine, seconds)
    times the largest slowdown sampled: once at creation and twice at the first question
    after the job (so a job that ran while the load came or went is covered by either
    side); later questions reuse those samples.
    """

    def __init__(self) -> None:
        self.samples = [cpu_slowdown()]

    def factor(self) -> float:
        """The largest slowdown sampled before and after the job."""
        if len(self.samples) == 1:
            self.samples += [cpu_slowdown(), cpu_slowdown()]
        return max(self.samples)

    def slack(self, idle_s: float) -> float:
        """``idle_s`` seconds scaled by :meth:`factor`."""
        return idle_s * self.factor()

    def __repr__(self) -> str:  # shown by pytest in a failed assertion
        return f"Load(samples={[round(s, 2) for s in self.samples]})"


def wall_clock(monotonic_s: float) -> float:
    """A ``time.monotonic()`` reading of this machine as ``time.time()`` epoch seconds."""
    return monotonic_s + (time.time() - time.monotonic())
