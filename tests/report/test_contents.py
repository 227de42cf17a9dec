"""What the HTML report shows, read from the ledger: the runs' figures."""

from __future__ import annotations

from typing import Any

from bulkfetch.ledger_meta import LedgerMeta
from bulkfetch.report.contents import RunFigures, run_figures


def test_run_figures_tolerates_junk() -> None:
    def figures(runs: Any) -> tuple[RunFigures | None, RunFigures | None]:
        return run_figures(LedgerMeta.from_json({"runs": runs}).runs)  # as the ledger reads them

    assert figures(None) == (None, None)
    assert figures([1, "x"]) == (None, None)
    last, overall = figures(
        [{"started": "yesterday", "requests": {"create": True}}, {"started": 10, "finished": 15}]
    )
    assert last is not None and overall is not None
    assert last.elapsed == 5 and overall.runs == 2 and overall.requests == {"create": 0}
