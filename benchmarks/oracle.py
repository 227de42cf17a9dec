"""How close to the bound a poller could get on case 1 if it *knew* the processing times' law.

``python -m benchmarks.oracle`` prints, for each threshold, makespan / bound and status calls
per job over case 1's seeds. Slot-exact and offline: tasks are created one per create slot
(paced 1% under the limit, as bulkfetch's limiters pace, or exactly at it with
``--pace 1``), their processing times drawn exactly as the simulator draws them for the
seed; at each status slot the policy polls the in-flight task most likely to be ready now,
given its age and the last age it answered "not ready", if that probability clears the
threshold. The law is the true one, so there is nothing to learn: this is the best case for
a poller that is not clairvoyant, and the gap to 1.000 is the price of not knowing which
task is ready. The bound is the simulator's own (:func:`bound_makespan`).
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Sequence

from bulkfetch.simulator.state import bound_makespan

__all__ = ["oracle_run"]

SEEDS = (11, 3, 5, 7, 13)


def _cdf(age: float, mu: float, sigma: float) -> float:
    if age <= 0:
        return 0.0
    return 0.5 * (1.0 + math.erf((math.log(age) - mu) / (sigma * math.sqrt(2.0))))


def oracle_run(
    seed: int,
    *,
    threshold: float,
    n: int = 300,
    median: float = 20.0,
    sigma: float = 0.5,
    pace: float = 1.01,
) -> tuple[float, float]:
    """Makespan / bound and status calls per job for one seed of case 1."""
    rng = random.Random(seed)  # as the simulator: one draw per creation, in order
    processing = [rng.lognormvariate(math.log(median), sigma) for _ in range(n)]
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
        for i in range(created):
            if i not in left:
                continue
            floor = _cdf(not_ready_at.get(i, 0.0), mu, sigma)
            p = (_cdf(t - i * pace, mu, sigma) - floor) / (1.0 - floor) if floor < 1 else 1.0
            if p > best_p:
                best, best_p = i, p
        if best >= 0 and best_p >= threshold:
            calls += 1
            if t >= ready[best]:
                left.discard(best)
                end = t
            else:
                not_ready_at[best] = t - best * pace
        t += pace
    bound = bound_makespan(processing, 1.0, 1.0)
    return end / bound, calls / n


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pace", type=float, default=1.01, help="slots per request")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = parser.parse_args(argv)
    print(f"threshold | {' | '.join(f'seed {s}' for s in args.seeds)} | mean")
    for threshold in (0.9, 0.8, 0.7, 0.5, 0.0):
        runs = [oracle_run(s, threshold=threshold, pace=args.pace) for s in args.seeds]
        cells = " | ".join(f"{r:.3f} / {c:.3f}" for r, c in runs)
        mean_r = sum(r for r, _ in runs) / len(runs)
        mean_c = sum(c for _, c in runs) / len(runs)
        print(f"{threshold} | {cells} | {mean_r:.3f} / {mean_c:.3f}", flush=True)


if __name__ == "__main__":
    main()
