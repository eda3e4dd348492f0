"""calculate_capacity: Erlang C reference values, minimal instance counts, Little's law, growth and USL."""

import heapq
import math
from typing import Any

import numpy as np
import pytest

from alma_mcp.analysis.capacity import calculate_capacity, erlang_c, fit_usl
from alma_mcp.errors import InvalidRequest


@pytest.mark.parametrize(
    ("servers", "load", "expected"),
    [(3, 2.0, 0.4444), (12, 10.0, 0.4494), (11, 10.0, 0.6821), (1, 0.5, 0.5), (6, 5.0, 0.5875), (7, 5.0, 0.3241)],
)
def test_erlang_c_matches_reference_values(servers: int, load: float, expected: float) -> None:
    assert erlang_c(servers, load) == pytest.approx(expected, abs=1e-4)


def test_erlang_c_is_exact_for_three_servers_and_stable_for_thousands() -> None:
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9, rel=1e-12)
    value = erlang_c(5000, 4900.0)
    assert 0 < value < 1
    assert math.isfinite(value)
    assert erlang_c(4, 0.0) == 0.0


def test_reference_tier_needs_seven_instances_for_a_99_percent_wait_under_100ms() -> None:
    report = calculate_capacity(100, service_time=0.05, target_wait=0.1, percentile=0.99, target_utilisation=0.9)
    assert report.offered_load == pytest.approx(5.0)
    assert (report.instances_for_utilisation, report.instances_for_wait, report.instances) == (6, 7, 7)
    at = report.at_recommended
    assert at.probability_of_wait == pytest.approx(0.3241, abs=1e-4)
    assert at.mean_wait == pytest.approx(0.0081, abs=1e-4)
    assert 1 - at.probability_of_wait * math.exp(-(7 * 20 - 100) * 0.1) == pytest.approx(0.994, abs=1e-3)
    six = calculate_capacity(100, service_time=0.05, current_instances=6, target_wait=0.1, percentile=0.99)
    assert six.current is not None
    assert six.current.utilisation == pytest.approx(0.8333, abs=1e-4)
    assert six.current.probability_of_wait == pytest.approx(0.5875, abs=1e-4)
    assert six.current.mean_wait == pytest.approx(0.0294, abs=1e-4)
    assert not six.current.meets_target


@pytest.mark.parametrize(
    ("rate", "service", "wait", "pct"),
    [(100, 0.05, 0.1, 0.99), (2000, 0.05, 0.01, 0.95), (3.3, 1.7, 0.5, 0.9), (750, 0.2, 0.0, 0.8), (0.5, 2, 1, 0.5)],
)
def test_recommended_count_is_minimal(rate: float, service: float, wait: float, pct: float) -> None:
    report = calculate_capacity(rate, service_time=service, target_wait=wait, percentile=pct, target_utilisation=0.95)
    c = report.instances_for_wait
    assert c is not None
    load = rate * service
    assert c > load

    def tail(servers: int) -> float:
        return erlang_c(servers, load) * math.exp(-(servers / service - rate) * wait)

    assert tail(c) <= 1 - pct + 1e-12
    assert c - 1 <= load or tail(c - 1) > 1 - pct
    assert report.at_recommended.wait_percentile <= wait + 1e-9


def test_utilisation_target_drives_the_count_and_littles_law_holds() -> None:
    report = calculate_capacity(2000, service_time=0.05, target_utilisation=0.7)
    assert report.offered_load == pytest.approx(100.0)  # 2,000 rps x 50 ms in service at once
    assert report.instances == report.instances_for_utilisation == 143  # ceil(100 / 0.7)
    at = report.at_recommended
    assert at.utilisation <= 0.7
    assert at.mean_in_system == pytest.approx(2000 * at.mean_response, rel=1e-12)
    assert at.mean_queue_length == pytest.approx(2000 * at.mean_wait, rel=1e-12)
    assert at.mean_in_system - at.mean_queue_length == pytest.approx(report.offered_load, rel=1e-9)
    assert at.headroom == pytest.approx(1 - at.utilisation)


def test_throughput_and_service_time_are_interchangeable() -> None:
    a = calculate_capacity(300, service_time=0.02, target_wait=0.01)
    b = calculate_capacity(300, per_instance_throughput=50, target_wait=0.01)
    assert a.model_dump() == b.model_dump()


def test_growth_projects_when_capacity_runs_out() -> None:
    report = calculate_capacity(
        100, service_time=0.05, current_instances=8, growth_rate_monthly=0.1, horizon_months=12, start_date="2026-01-01"
    )
    growth = report.growth
    assert growth is not None
    assert growth.max_arrival_rate == pytest.approx(0.7 * 8 * 20)
    assert growth.months_until_exhausted == pytest.approx(math.log(112 / 100) / math.log(1.1))
    assert growth.exhausted_within_horizon
    assert growth.exhausted_on == "2026-02-06"  # 1.19 months of 30.44 days
    assert [p.instances_needed for p in growth.monthly][:3] == [8, 8, 9]
    assert len(growth.monthly) == 13


def test_growth_with_a_wait_target_uses_the_tighter_limit() -> None:
    report = calculate_capacity(100, service_time=0.05, target_wait=0.01, percentile=0.99, growth_rate_monthly=0.05)
    growth = report.growth
    assert growth is not None
    assert growth.horizon_months == 12
    assert growth.instances == report.instances
    top = growth.max_arrival_rate
    assert top < 0.7 * report.instances * 20
    at_top = calculate_capacity(top * 0.999, service_time=0.05, target_wait=0.01, percentile=0.99)
    assert at_top.instances <= report.instances
    assert calculate_capacity(top * 1.01, service_time=0.05, target_wait=0.01, percentile=0.99).instances > (
        report.instances
    )


def test_no_growth_never_exhausts_and_current_shortfall_is_zero_months() -> None:
    flat = calculate_capacity(10, service_time=0.1, growth_rate_monthly=0.0)
    assert flat.growth is not None
    assert flat.growth.months_until_exhausted is None
    assert not flat.growth.exhausted_within_horizon
    short = calculate_capacity(100, service_time=0.1, current_instances=5, growth_rate_monthly=0.02)
    assert short.growth is not None
    assert short.growth.months_until_exhausted == 0.0
    assert short.notes == ["5 instances do not meet the targets; 15 do"]


def test_usl_fit_recovers_sigma_and_kappa_within_ten_percent_at_two_percent_noise() -> None:
    rng = np.random.default_rng(42)
    sigma, kappa, lam = 0.05, 0.001, 100.0
    for _ in range(20):
        points = [
            (n, lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1)) * (1 + rng.normal(0, 0.02)))
            for n in range(1, 65)  # a load test stepping concurrency 1..64
        ]
        fit = fit_usl(points)
        assert fit.sigma == pytest.approx(sigma, rel=0.1)
        assert fit.kappa == pytest.approx(kappa, rel=0.1)
        assert fit.throughput_one == pytest.approx(lam, rel=0.05)
        assert fit.peak_concurrency == pytest.approx(math.sqrt((1 - sigma) / kappa), rel=0.1)
        assert fit.r_squared > 0.99


def test_usl_linear_scaling_has_no_peak_and_a_count_past_the_peak_is_flagged() -> None:
    linear = fit_usl([(1, 10.0), (2, 20.0), (4, 40.0), (8, 80.0)])
    assert linear.sigma == pytest.approx(0, abs=1e-9)
    assert linear.kappa == pytest.approx(0, abs=1e-9)
    assert linear.peak_concurrency is None
    points = [(n, 10 * n / (1 + 0.1 * (n - 1) + 0.01 * n * (n - 1))) for n in (1, 2, 4, 8)]
    report = calculate_capacity(1000, service_time=0.05, usl_points=points)
    assert report.usl is not None
    assert report.usl.peak_concurrency == pytest.approx(math.sqrt(0.9 / 0.01))
    assert any("exceed the USL peak" in note for note in report.notes)


def _simulate_mean_wait(lam: float, mu: float, servers: int, arrivals: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1 / lam, arrivals)).tolist()
    services = rng.exponential(1 / mu, arrivals).tolist()
    free = [0.0] * servers
    warm = arrivals // 10
    total = 0.0
    for i, (arrival, service) in enumerate(zip(times, services, strict=True)):
        start = max(heapq.heappop(free), arrival)
        if i >= warm:
            total += start - arrival
        heapq.heappush(free, start + service)
    return total / (arrivals - warm)


@pytest.mark.parametrize(("rho", "servers"), [(0.5, 4), (0.8, 5), (0.9, 10)])
def test_mean_wait_agrees_with_a_seeded_simulation(rho: float, servers: int) -> None:
    report = calculate_capacity(rho * servers, service_time=1.0, current_instances=servers)
    assert report.current is not None
    simulated = _simulate_mean_wait(rho * servers, 1.0, servers, 1_000_000, seed=0)
    assert simulated == pytest.approx(report.current.mean_wait, rel=0.03)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"arrival_rate": -1, "service_time": 0.1}, "arrival_rate"),
        ({"arrival_rate": float("nan"), "service_time": 0.1}, "arrival_rate"),
        ({"arrival_rate": float("inf"), "service_time": 0.1}, "arrival_rate"),
        ({"arrival_rate": 1}, "exactly one"),
        ({"arrival_rate": 1, "service_time": 0.1, "per_instance_throughput": 10}, "exactly one"),
        ({"arrival_rate": 1, "service_time": 0}, "service_time"),
        ({"arrival_rate": 1, "per_instance_throughput": -5}, "per_instance_throughput"),
        ({"arrival_rate": 1, "service_time": 0.1, "target_utilisation": 1.0}, "below 1"),
        ({"arrival_rate": 1, "service_time": 0.1, "target_utilisation": 1.2}, "below 1"),
        ({"arrival_rate": 1, "service_time": 0.1, "target_utilisation": 0}, "target_utilisation"),
        ({"arrival_rate": 1, "service_time": 0.1, "percentile": 1.0}, "percentile"),
        ({"arrival_rate": 1, "service_time": 0.1, "target_wait": -0.1}, "target_wait"),
        ({"arrival_rate": 1, "service_time": 0.1, "current_instances": 0}, "current_instances"),
        ({"arrival_rate": 1, "service_time": 0.1, "horizon_months": 6}, "growth_rate_monthly"),
        ({"arrival_rate": 1, "service_time": 0.1, "growth_rate_monthly": -1.5}, "growth_rate_monthly"),
        ({"arrival_rate": 1, "service_time": 0.1, "growth_rate_monthly": 0.1, "horizon_months": 0}, "horizon"),
        ({"arrival_rate": 1e9, "service_time": 1}, "split the tier"),
        ({"arrival_rate": 1, "service_time": 0.1, "growth_rate_monthly": 0.1, "start_date": "soon"}, "ISO date"),
        ({"arrival_rate": 1, "service_time": 0.1, "usl_points": [(1, 1.0), (2, 2.0)]}, "at least 3"),
        ({"arrival_rate": 1, "service_time": 0.1, "usl_points": [(1, 1.0), (2, -2.0), (3, 3)]}, "positive"),
        ({"arrival_rate": 1, "service_time": 0.1, "usl_points": [(1, 1.0), (2, float("nan")), (3, 3)]}, "finite"),
    ],
)
def test_bad_input_is_invalid_request_saying_what_is_allowed(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        calculate_capacity(**kwargs)
    assert info.value.code == "request.invalid"
    assert fragment in info.value.message


@pytest.mark.parametrize(("servers", "load"), [(0, 1.0), (3, 3.0), (3, 4.5), (3, -1.0), (3, float("nan"))])
def test_erlang_c_refuses_an_unstable_or_malformed_queue(servers: int, load: float) -> None:
    with pytest.raises(InvalidRequest) as info:
        erlang_c(servers, load)
    assert info.value.code == "request.invalid"
