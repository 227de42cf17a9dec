"""Tests for bulkfetch.processing: the processing-time model (its law, its fit, its memory)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkfetch.processing import (
    KEEP_INTERVALS,
    ProcessingModel,
    _truncated_moments,
    prior_median_weight,
)

# -- ProcessingModel --------------------------------------------------------------------------


def test_prior_is_used_before_any_data() -> None:
    model = ProcessingModel(prior_median=30.0, prior_sigma=0.75)
    assert model.n == 0
    assert math.exp(model.mu) == pytest.approx(30.0)
    assert model.sigma == pytest.approx(0.75)
    assert model.quantile(0.5) == pytest.approx(30.0, rel=1e-6)
    assert model.cdf(30.0) == pytest.approx(0.5)
    assert model.next_poll_age(0.0) == pytest.approx(30.0, rel=1e-6)


@pytest.mark.parametrize(("median", "sigma"), [(20.0, 0.5), (3.0, 0.3), (600.0, 1.0)])
def test_model_converges_to_the_samples(median: float, sigma: float) -> None:
    rng = random.Random(42)
    samples = [rng.lognormvariate(math.log(median), sigma) for _ in range(200)]
    model = ProcessingModel(prior_median=30.0, prior_sigma=0.75)
    for s in samples:
        model.observe(s)
    assert model.n == 200
    assert math.exp(model.mu) == pytest.approx(median, rel=0.10)
    assert math.exp(model.mu) == pytest.approx(statistics.median(samples), rel=0.10)
    assert model.sigma == pytest.approx(sigma, rel=0.25)
    assert model.quantile(0.5) == pytest.approx(median, rel=0.10)


def test_observe_tolerates_zero_and_negative_ages() -> None:
    model = ProcessingModel()
    for s in (0.0, -5.0, 1e-9):
        model.observe(s)
    assert math.isfinite(model.mu)
    assert math.isfinite(model.sigma)
    assert math.isfinite(model.quantile(0.9))


def test_sigma_has_a_floor() -> None:
    model = ProcessingModel(prior_weight=0.0)
    for _ in range(50):
        model.observe(10.0)
    assert model.sigma >= 0.05
    assert model.quantile(0.99) > model.quantile(0.5)


models = st.builds(
    ProcessingModel,
    prior_median=st.floats(0.01, 1e5),
    prior_sigma=st.floats(0.05, 2.5),
    prior_weight=st.floats(0.5, 10),
)


@settings(max_examples=200, deadline=None)
@given(models, st.floats(0.001, 0.999), st.lists(st.floats(0.01, 1e4), max_size=20))
def test_cdf_and_quantile_are_inverse(model: ProcessingModel, p: float, data: list[float]) -> None:
    for x in data:
        model.observe(x)
    age = model.quantile(p)
    assert age > 0
    assert model.cdf(age) == pytest.approx(p, abs=1e-6)
    assert model.quantile(model.cdf(age)) == pytest.approx(age, rel=1e-5)


@settings(max_examples=200, deadline=None)
@given(models, st.lists(st.floats(0, 1e6), min_size=2, max_size=10))
def test_cdf_is_monotone_and_bounded(model: ProcessingModel, ages: list[float]) -> None:
    ages.sort()
    values = [model.cdf(a) for a in ages]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values)
    assert model.cdf(0.0) == 0.0
    assert model.cdf(-1.0) == 0.0


@settings(max_examples=300, deadline=None)
@given(models, st.floats(0, 1e6), st.floats(0, 1e6))
def test_next_poll_age_is_monotone_and_never_in_the_past(
    model: ProcessingModel, a: float, b: float
) -> None:
    lo, hi = sorted((a, b))
    n_lo, n_hi = model.next_poll_age(lo), model.next_poll_age(hi)
    assert n_lo >= lo
    assert n_hi >= hi
    assert n_hi >= n_lo * (1 - 1e-9)
    assert math.isfinite(n_hi)


def test_next_poll_age_waits_for_even_odds_given_the_age() -> None:
    model = ProcessingModel(prior_median=30.0, prior_sigma=0.75)
    last = 30.0
    nxt = model.next_poll_age(last)
    f_last = model.cdf(last)
    assert nxt > last
    assert (model.cdf(nxt) - f_last) / (1 - f_last) == pytest.approx(0.5, abs=1e-6)
    assert model.next_poll_age(last, target=0.9) > nxt


def test_prior_median_weight_fades_with_the_data() -> None:
    assert prior_median_weight(3.0, 0, fade=2.0) == pytest.approx(3.0)
    assert prior_median_weight(3.0, 2, fade=2.0) == pytest.approx(1.5)
    weights = [prior_median_weight(3.0, n, fade=2.0) for n in range(0, 400, 20)]
    assert weights == sorted(weights, reverse=True)
    assert weights[-1] * 100 < 3.0  # next to nothing against hundreds of answers
    assert prior_median_weight(3.0, 500, fade=0.0) == 3.0  # no fade: a fixed weight
    assert prior_median_weight(3.0, -1, fade=2.0) == 3.0


def test_a_first_answer_does_not_throw_the_prior_away() -> None:
    model = ProcessingModel(prior_median=2.0, prior_sigma=0.75)
    model.observe(20.0)
    assert 2.0 < math.exp(model.mu) < 10.0


def test_prior_median_stops_mattering_once_answers_come() -> None:
    rng = random.Random(5)
    samples = [rng.lognormvariate(math.log(20.0), 0.5) for _ in range(100)]
    low, high = ProcessingModel(prior_median=2.0), ProcessingModel(prior_median=200.0)
    for s in samples:
        low.observe(s)
        high.observe(s)
    # A fixed weight of 3 against 100 kept them 14% apart.
    assert math.exp(low.mu) == pytest.approx(math.exp(high.mu), rel=0.02)
    assert math.exp(low.mu) == pytest.approx(statistics.geometric_mean(samples), rel=0.02)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_upper_quantile_is_learned_from_polls_at_good_odds(seed: int) -> None:
    # Tasks first polled at an age of 30-50 s (a backlogged lane polling at 0.9 odds), and
    # every 10 s after a "not ready": nearly every answer bounds the time from above only.
    # The 0.9 quantile, which times the first polls, must come out right all the same; a
    # prior median of 2 s with a fixed weight dragged it down to 31-34 s (truth 38 s).
    rng = random.Random(seed)
    model = ProcessingModel(prior_median=2.0, prior_sigma=0.75)
    for i in range(300):
        t = rng.lognormvariate(math.log(20.0), 0.5)
        age = 30.0 + 20.0 * rng.random()
        if t <= age:
            model.observe_interval(0.0, age)
        else:
            while age < t:
                age += 10.0
            model.observe_interval(age - 10.0, age)
        if i % 10 == 9:
            model.refit()
    for _ in range(20):
        model.refit()
    truth = 20.0 * math.exp(0.5 * 1.2815516)
    assert model.quantile(0.9) == pytest.approx(truth, rel=0.10)


def test_json_round_trip() -> None:
    model = ProcessingModel()
    for s in (5.0, 7.0, 11.0):
        model.observe(s)
    other = ProcessingModel()
    other.load(model.to_json())
    assert (other.n, other.mu, other.sigma) == (model.n, model.mu, model.sigma)


@pytest.mark.parametrize(
    "data",
    [
        None,
        "n=3",
        [3, 1.0, 0.5],
        {},
        {"n": 3, "mean": 1.0},
        {"n": "three", "mean": 1.0, "m2": 0.5},
        {"n": None, "mean": 1.0, "m2": 0.5},
        {"n": -1, "mean": 1.0, "m2": 0.5},
        {"n": 3, "mean": math.nan, "m2": 0.5},
        {"n": 3, "mean": math.inf, "m2": 0.5},
        {"n": 3, "mean": 1.0, "m2": -0.5},
        {"n": 3, "mean": 1.0, "m2": math.nan},
        {"n": 3, "mean": [1.0], "m2": 0.5},
        {"n": math.nan, "mean": 1.0, "m2": 0.5},
    ],
)
def test_load_ignores_malformed_input(data: object) -> None:
    model = ProcessingModel()
    model.observe(12.0)
    before = (model.n, model.mu, model.sigma)
    model.load(data)
    assert (model.n, model.mu, model.sigma) == before


def test_load_ignores_infinite_count() -> None:
    model = ProcessingModel()
    model.load({"n": math.inf, "mean": 1.0, "m2": 0.5})
    assert model.n == 0


def test_load_keeps_the_model_usable() -> None:
    model = ProcessingModel()
    model.load({"n": 5, "mean": 1e300, "m2": 0.0})
    assert math.isfinite(model.quantile(0.9))


def _polled(rng: random.Random, n: int) -> list[tuple[float, float, float]]:
    """n tasks of log-normal processing (median 20 s, sigma 0.5), each polled first at a
    random age from 5 to 60 s (a lane with a backlog polls late), then every 10 s until
    ready: (true time, age at the last "not ready" or 0, age found ready)."""
    out = []
    for _ in range(n):
        t = math.exp(math.log(20.0) + 0.5 * rng.gauss(0.0, 1.0))
        age, last = rng.uniform(5.0, 60.0), 0.0
        while age < t:
            last, age = age, age + 10.0
        out.append((t, last, age))
    return out


def test_censored_fit_learns_the_processing_time_not_the_polling() -> None:
    rng = random.Random(7)
    censored = ProcessingModel(prior_median=2.0)
    naive = ProcessingModel(prior_median=2.0)
    for i, (_, last, found) in enumerate(_polled(rng, 400)):
        censored.observe_interval(last, found)
        naive.observe(found)
        if i % 20 == 19:
            censored.refit()
    for _ in range(20):
        censored.refit()
    # Ages found ready overstate the time by the polling gap (here ~1.7x the median).
    assert math.exp(naive.mu) > 30.0
    assert math.exp(censored.mu) == pytest.approx(20.0, rel=0.12)
    assert censored.sigma == pytest.approx(0.5, rel=0.25)


def test_not_ready_answers_alone_move_the_model_later() -> None:
    model = ProcessingModel(prior_median=2.0)
    for _ in range(5):
        model.refit([10.0] * 20)  # twenty tasks still processing at 10 s
    assert model.quantile(0.5) > 10.0
    assert model.cdf(10.0) < 0.5


def test_refit_without_data_changes_nothing() -> None:
    model = ProcessingModel(prior_median=20.0)
    model.observe(12.0)
    before = (model.n, model.mu, model.sigma)
    model.refit()
    model.refit([])
    model.refit([0.0])  # an age of zero says nothing
    assert (model.n, model.mu, model.sigma) == before


def test_refit_keeps_exact_times() -> None:
    model = ProcessingModel(prior_median=20.0, prior_weight=1e-9)
    for x in (10.0, 20.0, 40.0):
        model.observe(x)
    exact = (model.mu, model.sigma)
    model.observe_interval(19.9, 20.1)  # as good as exact: 20 s
    model.refit()
    assert model.n == 4
    assert model.mu == pytest.approx((math.log(10) + 2 * math.log(20) + math.log(40)) / 4, abs=1e-3)
    assert model.sigma < exact[1]


def test_kept_intervals_are_bounded() -> None:
    model = ProcessingModel()
    for i in range(KEEP_INTERVALS + 50):
        model.observe_interval(float(i % 7), float(i % 7) + 1.0)
    assert model.pending_intervals == KEEP_INTERVALS


def test_json_round_trip_after_a_censored_fit() -> None:
    rng = random.Random(3)
    model = ProcessingModel(prior_median=5.0)
    for _, last, found in _polled(rng, 50):
        model.observe_interval(last, found)
    model.refit([30.0, 45.0])
    other = ProcessingModel(prior_median=5.0)
    other.load(model.to_json())
    assert other.n == model.n
    assert other.mu == pytest.approx(model.mu)
    assert other.sigma == pytest.approx(model.sigma)


bounds = st.floats(-20, 20, allow_nan=False)


@given(
    mu=st.floats(-10, 10),
    sigma=st.floats(0.05, 5),
    lo=st.one_of(st.just(-math.inf), bounds),
    width=st.one_of(st.just(math.inf), st.floats(0, 40)),
)
def test_truncated_moments_stay_within_the_bounds(
    mu: float, sigma: float, lo: float, width: float
) -> None:
    hi = lo + width if math.isfinite(lo) else (mu + width if math.isfinite(width) else width)
    m1, m2 = _truncated_moments(mu, sigma, lo, hi)
    assert math.isfinite(m1) and math.isfinite(m2)
    assert lo - 1e-6 <= m1 <= hi + 1e-6
    assert m2 >= m1 * m1 - 1e-9


@given(data=st.lists(st.tuples(st.floats(0, 1e5), st.floats(0, 1e5)), min_size=1, max_size=40))
def test_refit_on_any_intervals_keeps_the_model_usable(data: list[tuple[float, float]]) -> None:
    model = ProcessingModel()
    for a, b in data:
        model.observe_interval(min(a, b), max(a, b))
    model.refit([a for a, _ in data])
    assert math.isfinite(model.mu)
    assert 0.05 <= model.sigma <= 5.0
    assert model.quantile(0.5) > 0


# -- the normal law: statistics.NormalDist in place of a hand-written erfinv ----------------

# Standard normal quantiles and CDF values, as published to 15 or more digits.
Z_TABLE = [
    (0.5, 0.0),
    (0.841344746068543, 1.0),
    (0.9, 1.2815515655446004),
    (0.95, 1.6448536269514722),
    (0.975, 1.959963984540054),
    (0.99, 2.3263478740408408),
    (0.999, 3.090232306167813),
    (0.0013498980316301, -3.0),
    (1e-9, -5.997807015007687),
]


@pytest.mark.parametrize(("p", "z"), Z_TABLE)
def test_quantile_and_cdf_match_the_tables(p: float, z: float) -> None:
    # A log-normal of median 30 s and sigma 0.75 (the prior): age = 30 * e^(0.75 z).
    model = ProcessingModel(prior_median=30.0, prior_sigma=0.75)
    age = 30.0 * math.exp(0.75 * z)
    assert model.quantile(p) == pytest.approx(age, rel=1e-8)
    assert model.cdf(age) == pytest.approx(p, rel=1e-8, abs=1e-15)


@settings(max_examples=300, deadline=None)
@given(
    median=st.floats(1e-2, 1e5),
    sigma=st.floats(0.05, 2.5),
    p=st.floats(1e-6, 1 - 1e-6),
)
def test_quantile_inverts_the_erf_cdf(median: float, sigma: float, p: float) -> None:
    # The CDF written out from math.erf, as the model used to: the quantile is its inverse.
    model = ProcessingModel(prior_median=median, prior_sigma=sigma)
    age = model.quantile(p)
    z = (math.log(age) - math.log(median)) / (sigma * math.sqrt(2))
    assert 0.5 * (1 + math.erf(z)) == pytest.approx(p, rel=1e-7, abs=1e-12)


def test_quantile_is_clamped_away_from_0_and_1() -> None:
    model = ProcessingModel(prior_median=30.0, prior_sigma=0.75)
    assert 0 < model.quantile(0.0) < model.quantile(1e-6)
    assert model.quantile(1e-6) < model.quantile(1.0) < math.inf


def test_truncated_moments_of_the_whole_line_are_the_normal_ones() -> None:
    m1, m2 = _truncated_moments(2.0, 0.5, -math.inf, math.inf)
    assert m1 == pytest.approx(2.0)
    assert m2 == pytest.approx(2.0**2 + 0.5**2)


def test_truncated_moments_keep_digits_in_the_lower_tail() -> None:
    # A narrow interval six sigmas below the mean (mass ~1e-11). Its mean, from mpmath at
    # 50 digits: -5.96974390592704. NormalDist.cdf (0.5 * (1 + erf)) for the mass gave
    # -5.9697526, wrong in the sixth digit; the erfc tails keep twelve.
    m1, _ = _truncated_moments(0.0, 1.0, -5.9715, -5.9680)
    assert m1 == pytest.approx(-5.9697439059270375, abs=1e-9)
