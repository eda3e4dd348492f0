"""forecast_metrics: Holt-Winters exponential smoothing (ETS with additive errors) in numpy.

- **Season.** Given, or the autocorrelation peak of the linearly detrended series: the shortest lag
  whose peak is within 80% of the highest one, with ACF >= 0.3 and at least 0.3 above the dip
  before it; none found means a non-seasonal (Holt) model. A seasonal model needs two seasons.
- **Models.** Additive trend with additive or (for positive series) multiplicative season, in
  error-correction form (Hyndman & Athanasopoulos, FPP 3, ch. 8). Chosen by in-sample fit (AIC;
  both have the same parameter count, so the smaller one-step SSE wins).
- **Parameters.** alpha, beta = alpha * b, gamma = (1 - alpha) * g with b, g in (0, 1) (the usual
  admissible region), minimising the one-step SSE by a grid search refined twice around the best
  point; every candidate of a round runs in one vectorised pass over the series. Initial states
  come from the first two seasons. At most the last ``FIT_WINDOW`` points (or six seasons if
  longer) are fitted: older data carries a weight below (1 - alpha)^2000 anyway.
- **Intervals** (80% and 95%): exact ETS variance for the additive models,
  sigma^2 (1 + sum_{j<h} (alpha + beta j + gamma [j mod m = 0])^2); for the multiplicative season,
  quantiles of 1,000 simulated future paths with a fixed seed (deterministic output).
- **Accuracy.** The last ``min(horizon, n / 4)`` points are held out, the model is refitted on the
  rest and scored: MAPE, and MASE against the in-sample seasonal-naive error.
- **Threshold.** The first step where the forecast (and, earlier, the 95% band) crosses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, Field

from alma_mcp.errors import InvalidRequest
from alma_mcp.lazy import LazyModule

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
else:
    np = LazyModule("numpy")  # imported on first use, not at server start-up

SeasonKind = Literal["additive", "multiplicative", "none"]

MIN_POINTS: Final = 4
MAX_POINTS: Final = 1_000_000
MAX_HORIZON: Final = 10_000
FIT_WINDOW: Final = 2_000
SIM_PATHS: Final = 1_000
_Z80: Final = 1.2815515655446004
_Z95: Final = 1.959963984540054
_GRID_ALPHA: Final = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9)
_GRID_BETA: Final = (0.001, 0.02, 0.1, 0.3)
_GRID_GAMMA: Final = (0.01, 0.05, 0.15, 0.35, 0.7)
_REFINE_STEPS: Final = (0.6, 0.2)


class ForecastPoint(BaseModel):
    step: int
    timestamp: str | None = None
    value: float
    lower_80: float
    upper_80: float
    lower_95: float
    upper_95: float


class Accuracy(BaseModel):
    """Scores of a refit on all but the last ``holdout`` points, forecasting those."""

    holdout: int
    mae: float
    rmse: float
    mape: float | None = Field(description="Percent; None when an actual value is 0.")
    mase: float | None = Field(description="MAE / in-sample seasonal-naive MAE; None when that is 0.")


class ThresholdCrossing(BaseModel):
    threshold: float
    direction: Literal["above", "below"]
    step: int | None = Field(description="First step where the forecast crosses; None within the horizon.")
    timestamp: str | None = None
    earliest_step: int | None = Field(description="First step where the 95% band crosses.")
    earliest_timestamp: str | None = None


class Forecast(BaseModel):
    """forecast_metrics' result."""

    model: str
    seasonal: SeasonKind
    season_length: int
    season_detected: bool
    parameters: dict[str, float]
    sigma: float = Field(description="Standard deviation of one-step errors.")
    aic: float
    fitted_points: int
    interval_method: Literal["analytic", "simulation"]
    points: list[ForecastPoint]
    accuracy: Accuracy | None
    threshold: ThresholdCrossing | None = None
    step_seconds: float | None = None
    filled_gaps: int = 0
    notes: list[str]


@dataclass(frozen=True, slots=True)
class _Fit:
    kind: SeasonKind
    m: int
    params: tuple[float, float, float]
    sse: float  # of the values divided by ``scale``
    n: int
    level: float
    trend: float
    season: FloatArray  # next m seasonal states, in order of use
    scale: float = 1.0

    @property
    def params_count(self) -> int:
        return 2 if self.kind == "none" else 3

    @property
    def sigma(self) -> float:
        return math.sqrt(self.sse / max(1, self.n - self.params_count)) * self.scale

    @property
    def aic(self) -> float:
        """AIC with the smoothing parameters and the initial states counted."""
        k = self.params_count + 2 + (self.m - 1 if self.kind != "none" else 0)
        return self.n * (math.log(max(self.sse, 1e-300) / self.n) + 2 * math.log(self.scale)) + 2 * k


def forecast_metrics(
    values: Sequence[float],
    horizon: int,
    timestamps: Sequence[str] | None = None,
    season_length: int | None = None,
    threshold: float | None = None,
) -> Forecast:
    """Forecast ``horizon`` steps with prediction intervals, holdout accuracy and threshold crossing.

    Raises:
        InvalidRequest: NaN or infinite values, too few points (fewer than two seasons for a seasonal
            model), a horizon out of range, or irregular or unordered timestamps.
    """
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or not MIN_POINTS <= y.size <= MAX_POINTS:
        raise InvalidRequest(f"values must be a list of {MIN_POINTS} to {MAX_POINTS} numbers, got {y.size}")
    if not np.all(np.isfinite(y)):
        bad = int(np.flatnonzero(~np.isfinite(y))[0])
        raise InvalidRequest(f"values must be finite numbers; index {bad} is {y[bad]!r}", data={"index": bad})
    if not 1 <= horizon <= MAX_HORIZON:
        raise InvalidRequest(f"horizon must be 1 to {MAX_HORIZON} steps, got {horizon}")
    if threshold is not None and not math.isfinite(threshold):
        raise InvalidRequest(f"threshold must be a finite number, got {threshold!r}")
    clock: _Clock | None = None
    if timestamps is not None:
        y, clock = _regularise(y, timestamps)
    notes: list[str] = []
    detected = season_length is None
    m = detect_season(y) if season_length is None else season_length
    if m < 1:
        raise InvalidRequest(f"season_length must be at least 1 (1 = no season), got {m}")
    if m > 1 and y.size < 2 * m:
        raise InvalidRequest(
            f"a seasonal model with season_length {m} needs at least two seasons ({2 * m} values), got {y.size}; "
            "give more history or season_length 1",
            data={"season_length": m, "required": 2 * m, "got": int(y.size)},
        )
    fit = _best_fit(y, m)
    method: Literal["analytic", "simulation"] = "simulation" if fit.kind == "multiplicative" else "analytic"
    mean, bands = _predict(fit, horizon)
    accuracy = _accuracy(y, m, horizon)
    if accuracy is None:
        notes.append("series too short to hold out points; no accuracy scores")
    points = [
        ForecastPoint(
            step=h + 1,
            timestamp=clock.at(h + 1) if clock is not None else None,
            value=float(mean[h]),
            lower_80=float(bands[0][h]),
            upper_80=float(bands[1][h]),
            lower_95=float(bands[2][h]),
            upper_95=float(bands[3][h]),
        )
        for h in range(horizon)
    ]
    names = ("alpha", "beta", "gamma") if fit.kind != "none" else ("alpha", "beta")
    return Forecast(
        model=f"holt-winters, additive trend, {fit.kind} season" if fit.kind != "none" else "holt, additive trend",
        seasonal=fit.kind,
        season_length=m,
        season_detected=detected and m > 1,
        parameters={name: round(v, 6) for name, v in zip(names, fit.params, strict=False)},
        sigma=fit.sigma,
        aic=fit.aic,
        fitted_points=fit.n,
        interval_method=method,
        points=points,
        accuracy=accuracy,
        threshold=None if threshold is None else _crossing(threshold, float(y[-1]), points),
        step_seconds=clock.step if clock is not None else None,
        filled_gaps=clock.filled if clock is not None else 0,
        notes=notes,
    )


def detect_season(y: FloatArray, max_lag: int | None = None) -> int:
    """The season length from the autocorrelation of the detrended series; 1 when there is none."""
    n = y.size
    if n < 8:
        return 1
    t = np.arange(n, dtype=np.float64)
    scaled = y / (float(np.abs(y).max()) or 1.0)
    x = scaled - np.polyval(np.polyfit(t, scaled, 1), t)
    if not np.any(x):
        return 1
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    acf = acf / acf[0]
    top = min(n // 2, max_lag or n // 2)
    peaks = [
        k
        for k in range(2, top + 1)
        if acf[k] > acf[k - 1] and (k + 1 >= n or acf[k] >= acf[k + 1]) and acf[k] >= 0.3
        if acf[k] - float(acf[1:k].min()) >= 0.3
    ]
    if not peaks:
        return 1
    best = max(float(acf[k]) for k in peaks)
    return next(k for k in peaks if acf[k] >= 0.8 * best)


# --- fitting ---------------------------------------------------------------------------------


def _best_fit(y: FloatArray, m: int) -> _Fit:
    """The better-fitting model on the recent window, fitted on values scaled to at most 1 in size."""
    window = y[-max(FIT_WINDOW, 6 * m) :]
    scale = float(np.abs(window).max()) or 1.0
    kinds: list[SeasonKind] = ["none"] if m == 1 else ["additive"]
    if m > 1 and float(window.min()) > 0:
        kinds.append("multiplicative")
    fits = [fit for fit in (_fit(window / scale, m, kind) for kind in kinds) if math.isfinite(fit.sse)]
    best = min(fits, key=lambda f: f.sse)  # the additive fit of scaled values is always finite
    return replace(
        best,
        scale=scale,
        level=best.level * scale,
        trend=best.trend * scale,
        season=best.season if best.kind == "multiplicative" else best.season * scale,
    )


def _fit(y: FloatArray, m: int, kind: SeasonKind) -> _Fit:
    """Grid search over (alpha, b, g), then two local refinements in logit space."""
    gammas = _GRID_GAMMA if kind != "none" else (0.5,)
    grid = np.array([(a, b, g) for a in _GRID_ALPHA for b in _GRID_BETA for g in gammas], dtype=np.float64)
    logits = np.log(grid / (1 - grid))
    best = logits[int(np.argmin(_sse(y, m, kind, logits)))]
    offsets = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    for step in _REFINE_STEPS:
        moves = [offsets * step, offsets * step, offsets * step if kind != "none" else np.zeros(1)]
        mesh = np.stack(np.meshgrid(*moves, indexing="ij"), axis=-1).reshape(-1, 3)
        candidates = best + mesh
        best = candidates[int(np.argmin(_sse(y, m, kind, candidates)))]
    params = _params(best[None, :], kind)
    sse, level, trend, season = _filter(y, m, kind, *params)
    alpha, beta, gamma = (float(p[0]) for p in params)
    order = np.roll(season[:, 0], -(y.size % m))  # next season's states, first to be used first
    return _Fit(kind, m, (alpha, beta, gamma), float(sse[0]), y.size, float(level[0]), float(trend[0]), order)


def _params(logits: FloatArray, kind: SeasonKind) -> tuple[FloatArray, FloatArray, FloatArray]:
    unit = 1 / (1 + np.exp(-logits))
    alpha = unit[:, 0]
    gamma = (1 - alpha) * unit[:, 2] if kind != "none" else np.zeros_like(alpha)
    return alpha, alpha * unit[:, 1], gamma


def _sse(y: FloatArray, m: int, kind: SeasonKind, logits: FloatArray) -> FloatArray:
    sse = _filter(y, m, kind, *_params(logits, kind))[0]
    return np.where(np.isfinite(sse), sse, np.inf)


def _initial(y: FloatArray, m: int, kind: SeasonKind) -> tuple[float, float, FloatArray]:
    """Level and trend just before the first point, and the first season's states (FPP heuristic)."""
    if kind == "none":
        k = min(y.size - 1, 10)
        slope = float(y[k] - y[0]) / k
        return float(y[0]) - slope, slope, np.zeros(1)
    first, second = float(y[:m].mean()), float(y[m : 2 * m].mean())
    slope = (second - first) / m
    phase = np.arange(2 * m, dtype=np.float64) - (m - 1) / 2
    line = first + slope * phase
    raw = y[: 2 * m] / line if kind == "multiplicative" else y[: 2 * m] - line
    season = raw.reshape(2, m).mean(axis=0)
    season = season / season.mean() if kind == "multiplicative" else season - season.mean()
    return first - slope * ((m - 1) / 2 + 1), slope, season


def _filter(
    y: FloatArray, m: int, kind: SeasonKind, alpha: FloatArray, beta: FloatArray, gamma: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """One-step SSE and final states for every parameter set (columns) in one pass over ``y``."""
    level0, trend0, season0 = _initial(y, m, kind)
    width = alpha.size
    level = np.full(width, level0)
    trend = np.full(width, trend0)
    season = np.repeat(season0[:, None], width, axis=1)
    sse = np.zeros(width)
    period = season.shape[0]
    with np.errstate(all="ignore"):
        for t, actual in enumerate(y.tolist()):
            i = t % period
            s = season[i]
            base = level + trend
            if kind == "multiplicative":
                e = actual - base * s
                scaled = e / s
                level = base + alpha * scaled
                trend = trend + beta * scaled
                season[i] = s + gamma * e / base
            else:
                e = actual - base - s
                level = base + alpha * e
                trend = trend + beta * e
                if kind == "additive":
                    season[i] = s + gamma * e
            sse += e * e
    return sse, level, trend, season


# --- prediction ------------------------------------------------------------------------------


def _predict(fit: _Fit, horizon: int) -> tuple[FloatArray, tuple[FloatArray, ...]]:
    h = np.arange(1, horizon + 1, dtype=np.float64)
    season = fit.season[(h.astype(np.int64) - 1) % fit.season.size]
    trend_line = fit.level + h * fit.trend
    if fit.kind == "multiplicative":
        return trend_line * season, _simulate(fit, horizon)
    mean = trend_line + (season if fit.kind == "additive" else 0.0)
    alpha, beta, gamma = fit.params
    j = np.arange(1, horizon, dtype=np.float64)
    c = alpha + beta * j + (gamma * (j % fit.m == 0) if fit.kind == "additive" else 0.0)
    spread = fit.sigma * np.sqrt(1 + np.concatenate([[0.0], np.cumsum(c * c)]))
    return mean, (mean - _Z80 * spread, mean + _Z80 * spread, mean - _Z95 * spread, mean + _Z95 * spread)


def _simulate(fit: _Fit, horizon: int) -> tuple[FloatArray, ...]:
    """Quantiles of future paths of the multiplicative model with Gaussian one-step errors."""
    rng = np.random.default_rng(20240229)
    alpha, beta, gamma = fit.params
    level = np.full(SIM_PATHS, fit.level)
    trend = np.full(SIM_PATHS, fit.trend)
    season = np.repeat(fit.season[:, None], SIM_PATHS, axis=1)
    errors = rng.normal(0.0, fit.sigma, size=(horizon, SIM_PATHS))
    paths = np.empty((horizon, SIM_PATHS))
    for step in range(horizon):
        i = step % fit.m
        s = season[i]
        base = level + trend
        e = errors[step]
        paths[step] = base * s + e
        level = base + alpha * e / s
        trend = trend + beta * e / s
        season[i] = s + gamma * e / base
    q = np.quantile(paths, [0.1, 0.9, 0.025, 0.975], axis=1)
    return q[0], q[1], q[2], q[3]


def _accuracy(y: FloatArray, m: int, horizon: int) -> Accuracy | None:
    hold = min(horizon, y.size // 4, y.size - 2 * m if m > 1 else y.size - MIN_POINTS)
    if hold < 1:
        return None
    train, test = y[:-hold], y[-hold:]
    mean, _ = _predict(_best_fit(train, m), hold)
    err = test - mean
    mae = float(np.abs(err).mean())
    size = float(np.abs(err).max()) or 1.0  # squares of huge values would overflow
    lag = m if m > 1 else 1
    naive = float(np.abs(train[lag:] - train[:-lag]).mean())
    return Accuracy(
        holdout=hold,
        mae=mae,
        rmse=float(np.sqrt(np.square(err / size).mean())) * size,
        mape=float(100 * np.abs(err / test).mean()) if np.all(test != 0) else None,
        mase=mae / naive if naive > 0 else None,
    )


def _crossing(threshold: float, last: float, points: list[ForecastPoint]) -> ThresholdCrossing:
    above = threshold >= last
    step = next((p for p in points if (p.value >= threshold if above else p.value <= threshold)), None)
    early = next((p for p in points if (p.upper_95 >= threshold if above else p.lower_95 <= threshold)), None)
    return ThresholdCrossing(
        threshold=threshold,
        direction="above" if above else "below",
        step=step.step if step else None,
        timestamp=step.timestamp if step else None,
        earliest_step=early.step if early else None,
        earliest_timestamp=early.timestamp if early else None,
    )


# --- timestamps ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Clock:
    last: datetime
    step: float
    filled: int

    def at(self, steps_ahead: int) -> str:
        return (self.last + timedelta(seconds=self.step * steps_ahead)).isoformat()


def _regularise(y: FloatArray, timestamps: Sequence[str]) -> tuple[FloatArray, _Clock]:
    """Values on a regular grid: the median spacing, short gaps filled by linear interpolation."""
    if len(timestamps) != y.size:
        raise InvalidRequest(f"timestamps ({len(timestamps)}) and values ({y.size}) must have the same length")
    try:
        moments = [datetime.fromisoformat(text) for text in timestamps]
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"timestamps must be ISO 8601 strings such as 2026-01-31T12:00:00Z: {exc}") from None
    if len({m.tzinfo is None for m in moments}) > 1:
        raise InvalidRequest("timestamps mix times with and without a time zone; use one form")
    seconds = np.array([(m if m.tzinfo else m.replace(tzinfo=UTC)).timestamp() for m in moments])
    gaps = np.diff(seconds)
    if np.any(gaps <= 0):
        bad = int(np.flatnonzero(gaps <= 0)[0]) + 1
        raise InvalidRequest(f"timestamps must increase strictly; index {bad} does not", data={"index": bad})
    step = float(np.median(gaps))
    slots = (seconds - seconds[0]) / step
    index = np.rint(slots)
    if np.any(np.abs(slots - index) > 0.1):
        raise InvalidRequest(f"timestamps are irregular: not on a grid of {step:g} s (the median spacing)")
    total = int(index[-1]) + 1
    filled = total - y.size
    if filled > 0.2 * total:
        raise InvalidRequest(f"{filled} of {total} time slots are missing; at most 20% can be interpolated")
    grid = np.arange(total, dtype=np.float64)
    return np.interp(grid, index, y), _Clock(moments[-1], step, filled)
