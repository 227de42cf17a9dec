"""One lane against every server limiter, offline: ``python -m benchmarks.lanes``.

The create lane's :class:`~bulkfetch.limiter.lane.Limiter` on a fake clock, one request at a
time, against each of the simulator's limiter kinds (``bulkfetch.simulator.limits``) and
each ``Retry-After`` form, with the rate configured right, 2x too high, or 2x too low with
``--learn-rates``, and with a jitter between send and arrival of 0.8% or 5% of a slot (the
internet at 10/min; loopback at the benchmarks' 50 ms slots). 150 requests at 10/min, three
seeds each. It is the tests' own driver (``tests.limiter.test_lane.drive``): a second to
run, no sockets, so a change to the limiter's decisions can be judged over every server
before the matrix spends an hour on it. *Span* is the first to the last accepted request
over the ideal (149 slots); *429s* are the lane's.

A screen, not a verdict: one request at a time, where a real lane has several in flight.
It favoured a faster ``--learn-rates`` search (x1.1 every 2 requests) that the matrix then
showed worse on the sliding log (1.56-1.59 of the bound against 1.37); what it showed for
a ``Retry-After`` that locates the window (one 429 a lane) the matrix confirmed.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from bulkfetch.simulator.limits import LIMITER_KINDS
from tests.limiter.test_lane import drive

__all__ = ["main", "scoreboard"]

FORMS = ("float", "int", "window", "off")
CONFIGURATIONS = (
    ("rates known", 1.0, False),
    ("2x too high", 2.0, False),
    ("2x too low", 0.5, True),
)
JITTERS = (0.05, 0.3)  # seconds, in 6 s slots
SEEDS = (0, 1, 2)
N = 150


def scoreboard() -> list[tuple[str, float, str, str, float, float]]:
    """(configuration, jitter, kind, form, mean 429s, mean span / ideal) for every cell."""
    rows: list[tuple[str, float, str, str, float, float]] = []
    for label, factor, learn in CONFIGURATIONS:
        for jitter in JITTERS:
            for kind in LIMITER_KINDS:
                for form in FORMS:
                    runs = [
                        drive(
                            kind, factor=factor, learn=learn, form=form, jitter=jitter, seed=s, n=N
                        )
                        for s in SEEDS
                    ]
                    refused = statistics.mean(r.refused for r in runs)
                    span = statistics.mean(r.span for r in runs) / ((N - 1) * 6.0)
                    rows.append((label, jitter, kind, form, refused, span))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", action="store_true", help="every cell, not only the summary")
    args = parser.parse_args(argv)
    rows = scoreboard()
    if args.cells:
        print("configuration | jitter | server | Retry-After | 429s | span")
        print("---|---|---|---|---|---")
        for label, jitter, kind, form, refused, span in rows:
            print(f"{label} | {jitter / 6:.1%} | {kind} | {form} | {refused:.1f} | {span:.3f}")
        print()
    print("configuration | jitter | mean 429s | most 429s | mean span | worst span (server, form)")
    print("---|---|---|---|---|---")
    for label, _, _ in CONFIGURATIONS:
        for jitter in JITTERS:
            cell = [r for r in rows if r[0] == label and r[1] == jitter]
            worst = max(cell, key=lambda r: r[5])
            print(
                f"{label} | {jitter / 6:.1%} | {statistics.mean(r[4] for r in cell):.2f} | "
                f"{max(r[4] for r in cell):.1f} | {statistics.mean(r[5] for r in cell):.3f} | "
                f"{worst[5]:.3f} ({worst[2]}, {worst[3]})"
            )


if __name__ == "__main__":
    main()
