"""The rows ``submit_orders`` does not simply place: placed before, edited, removed.

Split from :mod:`.submit` to keep one idea a module: how a row that the gateway or the
journal already knows is reported (skipped, changed after it was placed, removed from
the plan) and, with ``--amend``, how a changed row's working order is modified in place.
The rules are in :mod:`.placements` and ``docs/order-plan.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..._connect.compat import order_status
from ..._core.log import get_logger
from .exits import journal_if_cut_short
from .journal import DRY_RUN, SKIPPED, Journal
from .kit import Outcome, RunState
from .placements import (
    AMEND_FAILED,
    AMENDED,
    AMENDING,
    CHANGED,
    REMOVED,
    Found,
    Placement,
    Review,
)
from .plan import Plan
from .plan_amend import amend, amend_blocker
from .planned_order import PlannedOrder

__all__ = ["ReviewedRows"]

log = get_logger("ibkr_resilience.submit")


class ReviewedRows:
    """Mixed into :class:`.submit.Submitter`, which provides these attributes and
    ``_record`` (one journal record, summary line and log line per row)."""

    plan: Plan
    journal: Journal
    state: RunState
    account: str
    amend: bool
    dry_run: bool
    timeout: float
    placements: Mapping[str, Placement]

    _record: Callable[..., None]
    """``Submitter._record(row, event, *, trades=, status=, order_id=, perm_id=,
    message=, placed_fingerprint=)``: one journal record, summary line and log line."""

    def _record_skipped(self, row: PlannedOrder, seen: Review) -> None:
        found, earlier = seen.legs, seen.placement
        entry = found.get(row.order_ref) or next(iter(found.values()), None)
        if entry is None:  # known from the journal only: an earlier day, or gone since
            assert earlier is not None
            message = (
                f"already placed ({earlier.event.removeprefix('order.')} on {earlier.day}, "
                "journal); not open at the gateway now"
            )
            self._record_skip(row, earlier, message, seen.placed_fingerprint)
            return
        where = "; ".join(
            f"{ref.removeprefix(row.order_ref) or 'entry'}: {f.source} {f.order_id} ({f.status})"
            for ref, f in found.items()
        )
        missing = [r for r in row.order_refs if r not in found]
        note = f"; not found: {', '.join(missing)}" if missing else ""
        self._record_skip(row, entry, f"already placed ({where}){note}", seen.placed_fingerprint)

    def _record_skip(
        self, row: PlannedOrder, earlier: Found | Placement, message: str, fingerprint: str | None
    ) -> None:
        """A row not placed again: the order it was placed as (the gateway's status when
        the gateway knows it), why, and the fingerprint of what was placed."""
        self._record(
            row,
            SKIPPED,
            status=earlier.status if isinstance(earlier, Found) else "",
            order_id=earlier.order_id,
            perm_id=earlier.perm_id,
            message=message,
            placed_fingerprint=fingerprint,
        )

    def _changed(self, ib: Any, row: PlannedOrder, seen: Review) -> None:
        """A row placed earlier and edited since: never placed again; amended on request."""
        changes = "; ".join(seen.changes)
        entry: Found | None = seen.legs.get(row.order_ref)
        ids: dict[str, Any] = {
            "status": entry.status if entry else "",
            "order_id": entry.order_id if entry else None,
            "perm_id": entry.perm_id if entry else None,
            "placed_fingerprint": seen.placed_fingerprint,
        }
        message = f"changed after it was placed: not re-placed ({changes})"
        blocker = amend_blocker(row, seen, ib.client.clientId) if self.amend else None
        if not self.amend or blocker is not None:
            hint = f"; cannot amend: {blocker}" if blocker else ""
            if not self.amend and amend_blocker(row, seen, ib.client.clientId) is None:
                hint = "; --amend modifies the working order in place"
            self._record(row, CHANGED, message=message + hint, **ids)
            return
        assert entry is not None and entry.trade is not None
        if self.dry_run:
            self._record(
                row, DRY_RUN, message=f"would amend order {entry.order_id}: {changes}", **ids
            )
            return

        def cut_short(cause: str) -> None:
            self._record(row, AMEND_FAILED, message=f"{cause} while amending: check TWS", **ids)

        fields = row.journal_fields()
        fields.update(ids, account=self.account, changes=changes)
        self.journal.append(AMENDING, **fields)  # a failure here raises: nothing is sent
        with journal_if_cut_short(cut_short):
            event, text = amend(ib, row, entry.trade, self.account, self.timeout)
        if event == AMENDED:
            ids["placed_fingerprint"] = row.fingerprint
        ids["status"] = order_status(entry.trade)
        self._record(row, event, message=f"{text} ({changes})", **ids)

    def _record_moved(self, row: PlannedOrder, earlier: Placement) -> None:
        """A row without an id whose content was placed under another row number: the
        rows moved (one inserted above), so it is not placed a second time."""
        message = (
            f"already placed as {earlier.order_ref} ({earlier.event.removeprefix('order.')} "
            f"on {earlier.day}): rows without an id are numbered by position and moved; "
            "not placed again (give the plan an id column)"
        )
        self._record_skip(row, earlier, message, earlier.fingerprint)

    def _record_removed(self, ref: str, earlier: Found | Placement) -> None:
        """A row of this plan placed earlier and no longer in it: reported, not cancelled."""
        row_id = ref.rpartition(":")[2]
        if isinstance(earlier, Found):
            where = f"{earlier.source} {earlier.order_id} ({earlier.status})"
            order_id, perm_id, status = earlier.order_id, earlier.perm_id, earlier.status
        else:
            where = f"journal: {earlier.event.removeprefix('order.')} on {earlier.day}"
            order_id, perm_id, status = earlier.order_id, earlier.perm_id, ""
        message = (
            f"removed from the plan after it was placed ({where}): not cancelled; "
            "cancel it in TWS if it should not stay"
        )
        # The gateway's view names the order; what it was placed with is the journal's.
        journaled = earlier if isinstance(earlier, Placement) else self.placements.get(ref)
        fingerprint = journaled.fingerprint if journaled is not None else None
        self.journal.append(
            REMOVED,
            plan_id=self.plan.plan_id,
            row_id=row_id,
            order_ref=ref,
            account=self.account,
            order_id=order_id,
            perm_id=perm_id,
            status=status,
            message=message,
            placed_fingerprint=fingerprint,
        )
        self.state.outcomes.append(
            Outcome(
                REMOVED, f"row {row_id} (no longer in the plan)", ref, status, order_id, message
            )
        )
        log.info("submit.order", outcome=REMOVED, order_ref=ref, order_id=order_id, message=message)
