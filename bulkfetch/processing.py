"""The processing-time model: how long EOS takes to make an image, learned as tasks answer.

Pure: no I/O, no clock. :class:`ProcessingModel` is a log-normal over the ages at which
tasks were found ready, fitted online from censored observations (a poll only sees that a
task was, or was not, ready at its age) and started from a prior, so the first polls are
sane. The scheduler (:mod:`bulkfetch.scheduler`) asks it two things: the odds that a task
is ready at an age (``cdf``, and ``next_poll_age`` for when they reach a target) and how
long the slowest tasks take (``quantile``). The normal law is the standard library's
(:class:`statistics.NormalDist`); the ledger keeps what a run learned (``to_json``,
``load``) for the next.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist

__all__ = ["EM_STEPS", "KEEP_INTERVALS", "ProcessingModel", "prior_median_weight"]


#: The standard normal law: the model is a normal law of the log processing time.
_STANDARD = NormalDist()

#: Censored observations the model keeps (the latest ones): bounds the cost of a refit.
KEEP_INTERVALS = 1000
#: EM steps per refit, warm-started from the last fit: a few suffice between refits.
EM_STEPS = 4


@dataclass(slots=True)
class ProcessingModel:
    """An online log-normal estimate of task processing time, in seconds.

    A poll does not see when a task became ready, only that it was or was not ready at the
    poll: "ready at age b, after "not ready" at age a" says a < T <= b (a = 0 if it was never
    polled before), and a task still processing after "not ready" at age a says T > a.
    Taking b as the processing time, as a naive fit would, learns the polling schedule
    rather than the service: when the status lane has a backlog, tasks are found ready long
    after they were, and the model would drift later and later. So ``observe_interval``
    keeps such intervals (the latest ``KEEP_INTERVALS``) and ``refit`` fits the log-normal to
    them by maximum likelihood (EM over the censored log-times, warm-started, a few steps),
    with the tasks still running passed in as right-censored. Exact times (``observe``, and
    what earlier runs learned, ``load``) enter as they are.

    The prior counts as ``prior_weight`` observations, so the first polls are sane and a few
    early answers do not throw the fit about; its median's weight then fades as answers
    come (``prior_median_weight``), because the data cannot correct it: polls at good odds
    mostly find tasks ready, which bounds the processing time from above only, so they say
    little about the lower quantiles and a median with a fixed weight kept dragging the fit
    towards it, with a spread inflated to still match the upper tail. From a prior of 2
    slots the fixed weight fitted a median of 13-14 slots and sigma 0.7-0.85 for a true 20
    and 0.5 (first polls too early: misses), and 40 and 1.45 for a true 60 and 1.0 (polls
    after a "not ready" far too late).
    """

    prior_median: float = 30.0
    prior_sigma: float = 0.75
    prior_weight: float = 3.0
    #: Observations after which the prior median's weight has halved (see
    #: ``prior_median_weight``).
    prior_fade: float = 2.0
    #: Observations behind the estimate (exact ones plus censored ones at the last refit).
    n: int = 0
    _mean: float = 0.0
    _m2: float = 0.0
    # Exact observations (Welford), kept apart so a refit can combine them with the rest.
    _n_exact: int = 0
    _mean_exact: float = 0.0
    _m2_exact: float = 0.0
    # Censored observations as (log lower, log upper) bounds on the log processing time.
    _intervals: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=KEEP_INTERVALS)
    )

    def observe(self, seconds: float) -> None:
        """A processing time known exactly."""
        x = math.log(max(seconds, 1e-3))
        self._n_exact += 1
        delta = x - self._mean_exact
        self._mean_exact += delta / self._n_exact
        self._m2_exact += delta * (x - self._mean_exact)
        self.n += 1
        delta = x - self._mean
        self._mean += delta / self.n
        self._m2 += delta * (x - self._mean)

    def observe_interval(self, after: float, at: float) -> None:
        """A task found ready at age ``at``, last found not ready at age ``after`` (0: never).

        Counted at the next ``refit``.
        """
        lo = math.log(after) if after > 1e-3 else -math.inf
        hi = math.log(max(at, 1e-3))
        self._intervals.append((lo, max(lo, hi)))

    @property
    def pending_intervals(self) -> int:
        """Censored observations kept (all of them count at each refit)."""
        return len(self._intervals)

    def refit(self, running: list[float] | None = None) -> None:
        """Fit to the exact times, the kept intervals and ``running`` (ages of tasks found
        not ready and still processing, i.e. T > age)."""
        data = list(self._intervals)
        data.extend((math.log(a), math.inf) for a in running or () if a > 1e-3)
        if not data:
            return
        n_data = len(data)
        for _ in range(EM_STEPS):
            mu, sigma = self.mu, self.sigma
            # E-step: each censored log-time's expected value and square under the current
            # fit, truncated to its bounds; M-step: the same formula as for exact times.
            s1 = self._n_exact * self._mean_exact
            s2 = self._m2_exact + self._n_exact * self._mean_exact**2
            for lo, hi in data:
                m1, m2 = _truncated_moments(mu, sigma, lo, hi)
                s1 += m1
                s2 += m2
            n = self._n_exact + n_data
            self.n = n
            self._mean = s1 / n
            self._m2 = max(0.0, s2 - n * self._mean**2)

    @property
    def mu(self) -> float:
        w = prior_median_weight(self.prior_weight, self.n, fade=self.prior_fade)
        if w + self.n <= 0:
            return math.log(self.prior_median)
        return (w * math.log(self.prior_median) + self.n * self._mean) / (w + self.n)

    @property
    def sigma(self) -> float:
        w = self.prior_weight
        var = (w * self.prior_sigma**2 + self._m2) / (w + self.n)
        return min(max(math.sqrt(var), 0.05), 5.0)

    def cdf(self, age: float) -> float:
        """The fraction of tasks done by ``age`` seconds."""
        if age <= 0:
            return 0.0
        # The standard law, scaled here: a NormalDist(mu, sigma) per call costs a fifth
        # more, and the poller asks this for every candidate of every status slot.
        return _STANDARD.cdf((math.log(age) - self.mu) / self.sigma)

    def quantile(self, p: float) -> float:
        """The age by which a fraction ``p`` of tasks is done."""
        p = min(max(p, 1e-9), 1 - 1e-9)
        return math.exp(self.mu + self.sigma * _STANDARD.inv_cdf(p))

    def next_poll_age(self, last_age: float, *, target: float = 0.5) -> float:
        """The age at which a task found not ready at ``last_age`` is ready with odds ``target``.

        Solves ``(F(a) - F(last)) / (1 - F(last)) = target`` for ``a``.
        """
        f_last = self.cdf(last_age)
        # Far in the tail the quantile saturates; keep widening the gap geometrically
        # there so a very late task is not polled in every slot.
        return max(self.quantile(f_last + target * (1 - f_last)), last_age * 1.1)

    def to_json(self) -> dict[str, float]:
        return {"n": self.n, "mean": self._mean, "m2": self._m2}

    def load(self, data: object) -> None:
        """Carry over what earlier runs learned; anything malformed is ignored."""
        if isinstance(data, dict):
            try:
                n, mean, m2 = int(data["n"]), float(data["mean"]), float(data["m2"])
            except (KeyError, TypeError, ValueError, OverflowError):
                return
            # Plausible only: log-seconds within ±30 (a micro-second to centuries) and a
            # spread below e^10, so a damaged ledger cannot make the model overflow.
            if 0 <= n < 10**12 and abs(mean) <= 30 and 0 <= m2 <= 100 * max(n, 1):
                self.n, self._mean, self._m2 = n, mean, m2
                # What earlier runs learned counts as exact times from now on.
                self._n_exact, self._mean_exact, self._m2_exact = n, mean, m2
                self._intervals.clear()


def prior_median_weight(weight: float, n: int, *, fade: float) -> float:
    """How many observations the prior's median counts as once ``n`` are behind the fit:
    ``weight`` at first, half of it after ``fade`` observations, ``weight * fade / n`` in
    the long run (with 300 answers and the defaults, 0.02 against 300)."""
    if fade <= 0:
        return weight
    return weight / (1.0 + max(n, 0) / fade)


_SQRT2 = math.sqrt(2.0)


def _truncated_moments(mu: float, sigma: float, lo: float, hi: float) -> tuple[float, float]:
    """E[X] and E[X^2] for X ~ N(mu, sigma) restricted to (lo, hi] (bounds may be infinite)."""
    a = (lo - mu) / sigma
    b = (hi - mu) / sigma
    if a >= b:  # a point
        return lo, lo * lo
    # Work in the tail nearer the mass: Φ(b) - Φ(a) computed as a difference of tail
    # probabilities (erfc), upper ones when both bounds are above the mean, so far-tail
    # intervals keep digits. Not NormalDist.cdf: it is 0.5 * (1 + erf(z)), which loses
    # the lower tail's digits (a 1e-11 mass came out 1e-6 off, relatively).
    if a > 0:
        mass = 0.5 * (math.erfc(a / _SQRT2) - math.erfc(b / _SQRT2))
    else:
        mass = 0.5 * (math.erfc(-b / _SQRT2) - math.erfc(-a / _SQRT2))
    pa = _STANDARD.pdf(a) if math.isfinite(a) else 0.0
    pb = _STANDARD.pdf(b) if math.isfinite(b) else 0.0
    if mass < 1e-12:
        # Too far in a tail to compute: the nearer bound (or the middle) stands in.
        z = a if math.isfinite(a) and (not math.isfinite(b) or abs(a) < abs(b)) else b
        if math.isfinite(a) and math.isfinite(b):
            z = (a + b) / 2
        x = mu + sigma * z
        return x, x * x
    ez = (pa - pb) / mass
    apa = a * pa if math.isfinite(a) else 0.0
    bpb = b * pb if math.isfinite(b) else 0.0
    ez2 = 1.0 + (apa - bpb) / mass
    m1 = mu + sigma * ez
    m2 = mu * mu + 2 * mu * sigma * ez + sigma * sigma * max(ez2, 0.0)
    return m1, max(m2, m1 * m1)
