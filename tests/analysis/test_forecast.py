"""forecast_metrics: the quality bar on seeded seasonal series, season detection, thresholds, bad input."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from alma_mcp.analysis.forecast import Forecast, detect_season, forecast_metrics
from alma_mcp.errors import InvalidRequest

FloatArray = npt.NDArray[np.float64]
HISTORY, HORIZON, SEASON = 14 * 24, 48, 24


def hourly(seed: int, n: int, multiplicative: bool = False) -> FloatArray:
    """100 + 0.05 t + 20 sin(2 pi t / 24) + N(0, 3^2), or the same shape as a multiplicative season."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    season = np.sin(2 * np.pi * t / SEASON)
    base = (100 + 0.05 * t) * (1 + 0.2 * season) if multiplicative else 100 + 0.05 * t + 20 * season
    return base + rng.normal(0, 3, n)


@dataclass
class Scores:
    mape: list[float]
    mase: list[float]
    holdout_mape: list[float]
    holdout_mase: list[float]
    coverage_80: float
    coverage_95: float
    seasonal: list[str]
    season_lengths: list[int]


def score(count: int, multiplicative: bool) -> Scores:
    inside_80 = inside_95 = 0
    out = Scores([], [], [], [], 0.0, 0.0, [], [])
    for seed in range(count):
        y = hourly(seed, HISTORY + HORIZON, multiplicative)
        history, actual = y[:HISTORY], y[HISTORY:]
        result = forecast_metrics(history.tolist(), HORIZON)
        value = np.array([p.value for p in result.points])
        lo80, hi80 = np.array([p.lower_80 for p in result.points]), np.array([p.upper_80 for p in result.points])
        lo95, hi95 = np.array([p.lower_95 for p in result.points]), np.array([p.upper_95 for p in result.points])
        inside_80 += int(np.sum((actual >= lo80) & (actual <= hi80)))
        inside_95 += int(np.sum((actual >= lo95) & (actual <= hi95)))
        naive = float(np.mean(np.abs(history[SEASON:] - history[:-SEASON])))
        out.mape.append(float(100 * np.mean(np.abs((actual - value) / actual))))
        out.mase.append(float(np.mean(np.abs(actual - value)) / naive))
        assert result.accuracy is not None
        assert result.accuracy.mape is not None
        assert result.accuracy.mase is not None
        out.holdout_mape.append(result.accuracy.mape)
        out.holdout_mase.append(result.accuracy.mase)
        out.seasonal.append(result.seasonal)
        out.season_lengths.append(result.season_length)
    out.coverage_80 = 100 * inside_80 / (count * HORIZON)
    out.coverage_95 = 100 * inside_95 / (count * HORIZON)
    return out


@pytest.fixture(scope="module")
def additive() -> Scores:
    return score(200, multiplicative=False)


@pytest.fixture(scope="module")
def multiplicative() -> Scores:
    return score(80, multiplicative=True)


def test_quality_bar_mape_under_5_percent_and_mase_under_1(additive: Scores) -> None:
    for mapes in (additive.mape, additive.holdout_mape):
        assert max(mapes) < 5.0
    for mases in (additive.mase, additive.holdout_mase):
        assert float(np.mean(mases)) < 1.0
        assert float(np.mean(np.array(mases) < 1.0)) >= 0.95
    assert set(additive.season_lengths) == {SEASON}  # found by autocorrelation every time


def test_interval_coverage_within_ten_points_of_nominal(additive: Scores) -> None:
    assert 70 <= additive.coverage_80 <= 90
    assert 85 <= additive.coverage_95 <= 100


def test_multiplicative_season_is_chosen_by_fit_and_keeps_the_bar(multiplicative: Scores) -> None:
    assert multiplicative.seasonal.count("multiplicative") >= 0.7 * len(multiplicative.seasonal)
    assert max(multiplicative.mape) < 5.0
    assert float(np.mean(multiplicative.mase)) < 1.0
    assert 70 <= multiplicative.coverage_80 <= 90
    assert 85 <= multiplicative.coverage_95 <= 100


def test_additive_series_mostly_choose_the_additive_season(additive: Scores) -> None:
    assert additive.seasonal.count("additive") >= 0.9 * len(additive.seasonal)


@pytest.mark.parametrize("seed", range(5))
def test_no_season_is_found_in_trend_plus_noise_or_a_random_walk(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(500, dtype=np.float64)
    assert detect_season(10 + 0.2 * t + rng.normal(0, 2, 500)) == 1
    assert detect_season(np.cumsum(rng.normal(0, 1, 500))) == 1


def test_weekly_season_of_daily_data_is_detected() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(26 * 7, dtype=np.float64)
    weekly = np.array([0, 2, 2, 2, 2, 8, 9], dtype=np.float64)[t.astype(np.int64) % 7]
    assert detect_season(50 + weekly + rng.normal(0, 0.8, t.size)) == 7


def test_given_season_is_used_and_not_reported_as_detected() -> None:
    result = forecast_metrics(hourly(1, HISTORY).tolist(), 12, season_length=SEASON)
    assert (result.season_length, result.season_detected) == (SEASON, False)
    auto = forecast_metrics(hourly(1, HISTORY).tolist(), 12)
    assert (auto.season_length, auto.season_detected) == (SEASON, True)
    assert set(auto.parameters) == {"alpha", "beta", "gamma"}
    assert all(0 < v < 1 for v in auto.parameters.values())
    assert auto.parameters["beta"] <= auto.parameters["alpha"]
    assert auto.parameters["gamma"] <= 1 - auto.parameters["alpha"]


def test_linear_growth_crosses_the_threshold_within_one_period() -> None:
    rng = np.random.default_rng(8)
    t = np.arange(120, dtype=np.float64)
    result = forecast_metrics((50 + 0.5 * t + rng.normal(0, 1, 120)).tolist(), 200, threshold=150)
    assert result.seasonal == "none"
    crossing = result.threshold
    assert crossing is not None
    assert crossing.direction == "above"
    assert crossing.step is not None
    assert abs(crossing.step - 81) <= 10  # 50 + 0.5 t = 150 at t = 200, step 81 after t = 119
    assert crossing.earliest_step is not None
    assert crossing.earliest_step <= crossing.step


@pytest.mark.parametrize("seed", range(5))
def test_seasonal_series_crosses_within_one_season_of_the_truth(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(HISTORY + 400, dtype=np.float64)
    truth = 100 + 0.2 * t + 20 * np.sin(2 * np.pi * t / SEASON)
    y = truth + rng.normal(0, 3, t.size)
    result = forecast_metrics(y[:HISTORY].tolist(), 400, threshold=220.0)
    true_step = int(np.argmax(truth[HISTORY:] >= 220)) + 1
    assert result.threshold is not None
    assert result.threshold.step is not None
    assert abs(result.threshold.step - true_step) <= SEASON


def test_threshold_below_the_last_value_looks_for_a_fall_and_may_never_come() -> None:
    rng = np.random.default_rng(2)
    rising = (10 + np.arange(50) + rng.normal(0, 0.1, 50)).tolist()
    crossing = forecast_metrics(rising, 10, threshold=0.0).threshold
    assert crossing is not None
    assert crossing.direction == "below"
    assert (crossing.step, crossing.timestamp) == (None, None)


def test_timestamps_regularise_fill_gaps_and_continue_the_grid() -> None:
    stamps = [f"2026-03-01T{h:02d}:00:00Z" for h in range(24)] + [f"2026-03-02T{h:02d}:00:00Z" for h in range(24)]
    values = [float(v) for v in range(48)]
    del stamps[30], values[30]
    result = forecast_metrics(values, 2, timestamps=stamps, season_length=1)
    assert result.filled_gaps == 1
    assert result.step_seconds == 3600
    assert [p.timestamp for p in result.points] == ["2026-03-03T00:00:00+00:00", "2026-03-03T01:00:00+00:00"]
    assert result.points[0].value == pytest.approx(48, abs=0.05)


def test_output_is_deterministic_including_simulated_intervals() -> None:
    y = hourly(4, HISTORY, multiplicative=True).tolist()
    first = forecast_metrics(y, 24)
    assert first.interval_method == "simulation"
    assert first.model_dump_json() == forecast_metrics(y, 24).model_dump_json()
    assert Forecast.model_validate_json(first.model_dump_json()) == first


def test_short_series_has_no_holdout_but_still_forecasts() -> None:
    result = forecast_metrics([1.0, 2.0, 3.0, 4.0], 3)
    assert result.accuracy is None
    assert result.notes
    assert [round(p.value, 6) for p in result.points] == [5.0, 6.0, 7.0]


_HOURS = [f"2026-01-01T{h:02d}:00:00" for h in range(10)]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"values": [1.0, float("nan"), 3.0, 4.0, 5.0], "horizon": 3}, "index 1"),
        ({"values": [1.0, 2.0, float("inf"), 4.0, 5.0], "horizon": 3}, "finite"),
        ({"values": [1.0, 2.0, 3.0], "horizon": 3}, "4 to"),
        ({"values": list(range(40)), "horizon": 3, "season_length": 24}, "two seasons (48 values)"),
        ({"values": list(range(40)), "horizon": 0}, "horizon"),
        ({"values": list(range(40)), "horizon": 10_001}, "horizon"),
        ({"values": list(range(40)), "horizon": 3, "season_length": 0}, "season_length"),
        ({"values": list(range(40)), "horizon": 3, "threshold": float("nan")}, "threshold"),
        ({"values": list(range(10)), "horizon": 3, "timestamps": _HOURS[:9]}, "same length"),
        ({"values": list(range(10)), "horizon": 3, "timestamps": [*_HOURS[:9], "yesterday"]}, "ISO 8601"),
        ({"values": list(range(10)), "horizon": 3, "timestamps": [*_HOURS[:9], _HOURS[8]]}, "increase"),
        ({"values": list(range(10)), "horizon": 3, "timestamps": [*_HOURS[:9], "2026-01-01T09:00:00Z"]}, "zone"),
        (
            {"values": list(range(10)), "horizon": 3, "timestamps": [*_HOURS[:9], "2026-01-01T09:25:00"]},
            "irregular",
        ),
        (
            {"values": list(range(10)), "horizon": 3, "timestamps": [*_HOURS[:9], "2026-01-02T09:00:00"]},
            "missing",
        ),
    ],
)
def test_bad_input_is_invalid_request_saying_what_is_allowed(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        forecast_metrics(**kwargs)
    assert info.value.code == "request.invalid"
    assert fragment in info.value.message
