"""How close to the bound a poller can get when it cannot see which task is ready.

The bound (:func:`bound_makespan`) is clairvoyant: it fetches every task at the very slot it
is ready. A real poller learns that a task is ready only by polling it, and a poll that
finds it not ready takes a status slot. This module plays two blind pollers offline, slot
by slot, on given processing times (in slots; task ``i`` created at ``i * pace``):

* ``greedy_poller``: knows the processing-time law *exactly* (nothing to learn) and the
  rates (creations and status calls at ``pace`` slots, no margin), and at each status slot
  polls the in-flight task most likely to be ready now, given its age and the age at which
  it last answered "not ready", if those odds reach ``threshold`` (0: every slot used);
* ``fixed_delay_poller``: every task polls itself every ``every`` slots through one
  first-come-first-served pacer, as ``benchmarks.baselines.fixed_delay`` does, at exact
  pacing.

On every seed tried the two end within about 0.01 of each other (``python -m
benchmarks.oracle``): their gap to the bound is the price of not seeing readiness, which no
choice of what to poll closes. The matrix reports the greedy poller on each cell's own
tasks as the *blind reference*: what bulkfetch could reach with the law and the rates
known in advance and no jitter to pay for.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from collections.abc import Callable, Sequence
from functools import partial

from bulkfetch.simulator.state import bound_makespan

__all__ = ["draws", "fixed_delay_poller", "greedy_poller"]

SEEDS = (11, 3, 5, 7, 13)


def draws(seed: int, n: int, *, median: float = 20.0, sigma: float = 0.5) -> list[float]:
    """Processing times in slots, drawn as the simulator draws them for ``seed``."""
    rng = random.Random(seed)  # as the simulator: one draw per creation, in order
    return [rng.lognormvariate(math.log(median), sigma) for _ in range(n)]


def _cdf(age: float, mu: float, sigma: float) -> float:
    if age <= 0:
        return 0.0
    return 0.5 * (1.0 + math.erf((math.log(age) - mu) / (sigma * math.sqrt(2.0))))


def greedy_poller(
    processing: Sequence[float],
    *,
    median: float,
    sigma: float,
    threshold: float = 0.0,
    pace: float = 1.0,
) -> tuple[float, float]:
    """Makespan / bound and status calls per job of the greedy poller with the true law."""
    n = len(processing)
    ready = [i * pace + p for i, p in enumerate(processing)]
    mu = math.log(median)
    not_ready_at: dict[int, float] = {}  # task -> its age when it last said "not ready"
    left = set(range(n))
    t = 0.0
    calls = 0
    end = 0.0
    while left:
        created = min(n, int(t / pace + 1e-9) + 1)
        best, best_p = -1, -1.0
        for i in left:
            if i >= created:
                continue
            floor = _cdf(not_ready_at.get(i, 0.0), mu, sigma)
            p = (_cdf(t - i * pace, mu, sigma) - floor) / (1.0 - floor) if floor < 1 else 1.0
            if p > best_p or (p == best_p and i < best):
                best, best_p = i, p
        if best >= 0 and best_p >= threshold:
            calls += 1
            if t >= ready[best]:
                left.discard(best)
                end = t
            else:
                not_ready_at[best] = t - best * pace
        t += pace
    return end / bound_makespan(processing, 1.0, 1.0), calls / max(n, 1)


def fixed_delay_poller(
    processing: Sequence[float], *, every: float = 5.0, pace: float = 1.0
) -> tuple[float, float]:
    """Makespan / bound and status calls per job when every task polls itself every
    ``every`` slots through one FIFO pacer at ``pace`` slots a call."""
    n = len(processing)
    ready = [i * pace + p for i, p in enumerate(processing)]
    wanting = [(i * pace + every, i) for i in range(n)]  # (when it asks for a poll, task)
    heapq.heapify(wanting)
    free = 0.0  # the pacer's next free slot
    calls = 0
    end = 0.0
    while wanting:
        asked, i = heapq.heappop(wanting)
        at = max(asked, free)
        free = at + pace
        calls += 1
        if at >= ready[i]:
            end = max(end, at)
        else:
            heapq.heappush(wanting, (at + every, i))
    return end / bound_makespan(processing, 1.0, 1.0), calls / max(n, 1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pace", type=float, default=1.0, help="slots per request")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--jobs", type=int, nargs="+", default=[150, 300])
    parser.add_argument("--median", type=float, default=20.0, help="slots")
    parser.add_argument("--sigma", type=float, default=0.5)
    args = parser.parse_args(argv)
    print("jobs | poller | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean")
    print("|".join(["---"] * (len(args.seeds) + 3)))
    for n in args.jobs:
        tasks = {s: draws(s, n, median=args.median, sigma=args.sigma) for s in args.seeds}
        pollers: dict[str, Callable[[list[float]], tuple[float, float]]] = {
            "fixed delay, 5 slots": partial(fixed_delay_poller, pace=args.pace)
        }
        for th in (0.0, 0.5, 0.9):
            pollers[f"greedy, odds >= {th}"] = partial(
                greedy_poller, median=args.median, sigma=args.sigma, threshold=th, pace=args.pace
            )
        for name, poll in pollers.items():
            runs = [poll(tasks[s]) for s in args.seeds]
            cells = " | ".join(f"{r:.3f} ({c:.2f})" for r, c in runs)
            mean = sum(r for r, _ in runs) / len(runs)
            print(f"{n} | {name} | {cells} | {mean:.3f}", flush=True)


if __name__ == "__main__":
    main()
