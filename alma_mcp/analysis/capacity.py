"""calculate_capacity: instances needed for an arrival rate, from M/M/c queueing and a utilisation target.

Each instance is one server of rate mu = 1 / service_time (or its measured throughput). With offered
load A = lambda / mu, utilisation rho = A / c, the probability of waiting is Erlang C, computed from
the Erlang B recursion ``B_k = A B_(k-1) / (k + A B_(k-1))`` (no factorials or powers, so stable for
thousands of servers): ``C = c B / (c - A (1 - B))``. Then W_q = C / (c mu - lambda),
P(W_q > t) = C exp(-(c mu - lambda) t), W = W_q + 1/mu, and Little's law L = lambda W.
Instances = max(ceil(A / target utilisation), the smallest c whose wait percentile meets the target).
With monthly growth, the load c instances sustain (both constraints) gives the months until capacity
runs out: ln(lambda_max / lambda) / ln(1 + g). Measured (concurrency, throughput) points fit the
Universal Scalability Law X(N) = lambda N / (1 + sigma (N - 1) + kappa N (N - 1)) by least squares on
its linear form N / X = 1/lambda + (sigma/lambda)(N - 1) + (kappa/lambda) N (N - 1).
"""

import math
from collections.abc import Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, Field

from alma_mcp.errors import InvalidRequest
from alma_mcp.lazy import LazyModule

if TYPE_CHECKING:
    import numpy as np
else:
    np = LazyModule("numpy")  # imported on first use, not at server start-up

MAX_OFFERED_LOAD: Final = 1_000_000.0
MAX_HORIZON_MONTHS: Final = 120
DAYS_PER_MONTH: Final = 365.25 / 12


class QueueMetrics(BaseModel):
    """The M/M/c queue at one instance count."""

    instances: int
    utilisation: float
    probability_of_wait: float = Field(description="Erlang C.")
    mean_wait: float = Field(description="W_q, seconds in the queue on average.")
    wait_percentile: float = Field(description="Seconds in the queue at the requested percentile.")
    mean_response: float = Field(description="W = W_q + service time.")
    mean_queue_length: float = Field(description="L_q = lambda W_q.")
    mean_in_system: float = Field(description="L = lambda W (Little's law): requests in flight.")
    headroom: float = Field(description="1 - utilisation.")
    meets_target: bool


class MonthPoint(BaseModel):
    month: int
    arrival_rate: float
    instances_needed: int


class GrowthOutlook(BaseModel):
    """When the assessed instance count stops meeting the targets under compound monthly growth."""

    growth_rate_monthly: float
    horizon_months: int
    instances: int
    max_arrival_rate: float = Field(description="The highest rate these instances serve within both targets.")
    months_until_exhausted: float | None = Field(description="0 if already short; None if load never reaches it.")
    exhausted_within_horizon: bool
    exhausted_on: str | None = Field(default=None, description="ISO date, when a start date was given.")
    monthly: list[MonthPoint]


class USLFit(BaseModel):
    """Universal Scalability Law parameters fitted to measured points."""

    throughput_one: float = Field(description="lambda: throughput at concurrency 1.")
    sigma: float = Field(description="Contention.")
    kappa: float = Field(description="Coherency (crosstalk).")
    peak_concurrency: float | None = Field(description="N* = sqrt((1 - sigma) / kappa); None when kappa = 0.")
    peak_throughput: float | None
    r_squared: float
    points: int


class CapacityReport(BaseModel):
    """calculate_capacity's result."""

    arrival_rate: float
    service_time: float
    per_instance_throughput: float
    offered_load: float = Field(description="A = lambda x service time: busy instances on average (Little).")
    target_utilisation: float
    target_wait: float | None
    percentile: float
    instances: int
    instances_for_utilisation: int
    instances_for_wait: int | None
    at_recommended: QueueMetrics
    current: QueueMetrics | None = None
    growth: GrowthOutlook | None = None
    usl: USLFit | None = None
    notes: list[str]


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with ``servers`` and load A (< servers).

    Raises:
        InvalidRequest: fewer than one server, a negative or non-finite load, or A >= servers.
    """
    if servers < 1:
        raise InvalidRequest(f"servers must be at least 1, got {servers}", data={"servers": servers})
    if not (math.isfinite(offered_load) and offered_load >= 0):
        raise InvalidRequest(f"offered load must be finite and >= 0, got {offered_load!r}")
    if offered_load >= servers:
        raise InvalidRequest(
            f"offered load {offered_load:g} needs more than {servers} servers: utilisation would be "
            f"{offered_load / servers:.3g}; it must stay below 1",
            data={"servers": servers, "offered_load": offered_load},
        )
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    return servers * b / (servers - offered_load * (1 - b))


def calculate_capacity(
    arrival_rate: float,
    service_time: float | None = None,
    per_instance_throughput: float | None = None,
    target_wait: float | None = None,
    target_utilisation: float = 0.7,
    percentile: float = 0.95,
    growth_rate_monthly: float | None = None,
    horizon_months: int | None = None,
    current_instances: int | None = None,
    usl_points: Sequence[tuple[float, float]] | None = None,
    start_date: str | None = None,
) -> CapacityReport:
    """Instances needed for ``arrival_rate`` (per second) within a utilisation and an optional wait target.

    Give ``service_time`` (seconds) or ``per_instance_throughput`` (requests per second), not both.
    ``target_wait`` bounds the queueing delay at ``percentile``. ``growth_rate_monthly`` (0.05 = 5%)
    with ``horizon_months`` (default 12) projects when ``current_instances`` (else the recommended
    count) runs out; ``start_date`` (ISO) turns that into a date.

    Raises:
        InvalidRequest: a negative, zero or non-finite rate or time, both or neither of service time and
            throughput, a utilisation or percentile outside (0, 1), or a malformed growth or USL input.
    """
    lam = _number("arrival_rate", arrival_rate, minimum=0.0)
    mu = _service_rate(service_time, per_instance_throughput)
    if not 0 < target_utilisation < 1:
        raise InvalidRequest(
            f"target_utilisation must be above 0 and below 1 (a queue at or above 1 grows without bound), "
            f"got {target_utilisation!r}",
            data={"target_utilisation": target_utilisation},
        )
    if not 0 < percentile < 1:
        raise InvalidRequest(f"percentile must be between 0 and 1 exclusive (e.g. 0.95), got {percentile!r}")
    wait = None if target_wait is None else _number("target_wait", target_wait, minimum=0.0)
    load = lam / mu
    if load > MAX_OFFERED_LOAD:
        raise InvalidRequest(f"offered load {load:g} is above {MAX_OFFERED_LOAD:g} busy instances; split the tier")
    if current_instances is not None and current_instances < 1:
        raise InvalidRequest(f"current_instances must be at least 1, got {current_instances}")
    sizing = _Sizing(mu, target_utilisation, wait, percentile)
    c_util = max(1, math.ceil(load / target_utilisation - 1e-9))
    c_wait = sizing.for_wait(lam) if wait is not None else None
    instances = max(c_util, c_wait or 1)
    report = CapacityReport(
        arrival_rate=lam,
        service_time=1 / mu,
        per_instance_throughput=mu,
        offered_load=load,
        target_utilisation=target_utilisation,
        target_wait=wait,
        percentile=percentile,
        instances=instances,
        instances_for_utilisation=c_util,
        instances_for_wait=c_wait,
        at_recommended=sizing.metrics(lam, instances),
        notes=[],
    )
    notes = report.notes
    if current_instances is not None:
        report.current = sizing.metrics(lam, current_instances)
        if not report.current.meets_target:
            notes.append(f"{current_instances} instances do not meet the targets; {instances} do")
    if growth_rate_monthly is not None or horizon_months is not None:
        report.growth = _growth(sizing, lam, current_instances or instances, growth_rate_monthly, horizon_months)
        if start_date is not None and report.growth.months_until_exhausted is not None:
            start = _date(start_date)
            days = report.growth.months_until_exhausted * DAYS_PER_MONTH
            report.growth.exhausted_on = (start + timedelta(days=math.floor(days))).isoformat()
    if usl_points is not None:
        report.usl = fit_usl(usl_points)
        peak = report.usl.peak_concurrency
        if peak is not None and instances > peak:
            notes.append(f"{instances} instances exceed the USL peak N* = {peak:.1f}: adding more lowers throughput")
    return report


class _Sizing:
    def __init__(self, mu: float, utilisation: float, wait: float | None, percentile: float) -> None:
        self.mu, self.utilisation, self.wait, self.percentile = mu, utilisation, wait, percentile

    def wait_ok(self, lam: float, c: int, c_prob: float) -> bool:
        if self.wait is None:
            return True
        return c_prob * math.exp(-(c * self.mu - lam) * self.wait) <= 1 - self.percentile + 1e-12

    def for_wait(self, lam: float) -> int:
        """Smallest c > A meeting the wait target, with Erlang B carried from one c to the next."""
        load = lam / self.mu
        b, c = 1.0, 0
        while True:
            c += 1
            b = load * b / (c + load * b)
            if c > load and self.wait_ok(lam, c, c * b / (c - load * (1 - b))):
                return c

    def needed(self, lam: float) -> int:
        c_util = max(1, math.ceil(lam / self.mu / self.utilisation - 1e-9))
        return max(c_util, self.for_wait(lam)) if self.wait is not None else c_util

    def metrics(self, lam: float, c: int) -> QueueMetrics:
        load = lam / self.mu
        rho = load / c
        if rho >= 1:
            inf = math.inf
            return QueueMetrics(
                instances=c,
                utilisation=rho,
                probability_of_wait=1.0,
                mean_wait=inf,
                wait_percentile=inf,
                mean_response=inf,
                mean_queue_length=inf,
                mean_in_system=inf,
                headroom=1 - rho,
                meets_target=False,
            )
        prob = erlang_c(c, load)
        theta = c * self.mu - lam
        wq = prob / theta
        tail = 1 - self.percentile
        t_p = math.log(prob / tail) / theta if prob > tail else 0.0
        w = wq + 1 / self.mu
        return QueueMetrics(
            instances=c,
            utilisation=rho,
            probability_of_wait=prob,
            mean_wait=wq,
            wait_percentile=t_p,
            mean_response=w,
            mean_queue_length=lam * wq,
            mean_in_system=lam * w,
            headroom=1 - rho,
            meets_target=rho <= self.utilisation + 1e-12 and self.wait_ok(lam, c, prob),
        )

    def max_rate(self, c: int) -> float:
        """The highest arrival rate c instances serve within both targets (bisection for the wait)."""
        top = self.utilisation * c * self.mu
        if self.wait is None or self.wait_ok(top, c, erlang_c(c, top / self.mu)):
            return top
        low, high = 0.0, top
        for _ in range(60):
            mid = (low + high) / 2
            if self.wait_ok(mid, c, erlang_c(c, mid / self.mu)):
                low = mid
            else:
                high = mid
        return low


def _growth(sizing: _Sizing, lam: float, c: int, rate: float | None, horizon: int | None) -> GrowthOutlook:
    if rate is None:
        raise InvalidRequest("horizon_months needs growth_rate_monthly (e.g. 0.05 for 5% a month)")
    g = _number("growth_rate_monthly", rate, minimum=-0.99)
    months = 12 if horizon is None else horizon
    if not 1 <= months <= MAX_HORIZON_MONTHS:
        raise InvalidRequest(f"horizon_months must be 1 to {MAX_HORIZON_MONTHS}, got {months}")
    top = sizing.max_rate(c)
    until: float | None
    if lam >= top:
        until = 0.0
    elif g <= 0 or lam == 0:
        until = None
    else:
        until = math.log(top / lam) / math.log1p(g)
    points = [
        MonthPoint(month=m, arrival_rate=lam * (1 + g) ** m, instances_needed=sizing.needed(lam * (1 + g) ** m))
        for m in range(months + 1)
    ]
    return GrowthOutlook(
        growth_rate_monthly=g,
        horizon_months=months,
        instances=c,
        max_arrival_rate=top,
        months_until_exhausted=until,
        exhausted_within_horizon=until is not None and until <= months,
        monthly=points,
    )


def fit_usl(points: Sequence[tuple[float, float]]) -> USLFit:
    """Fit the Universal Scalability Law to (concurrency, throughput) points; sigma, kappa >= 0.

    Raises:
        InvalidRequest: fewer than 3 distinct concurrencies, concurrency below 1, or a throughput
            that is not positive and finite.
    """
    data = np.asarray(points, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != 2 or not np.all(np.isfinite(data)):
        raise InvalidRequest("usl_points must be finite (concurrency, throughput) pairs")
    n, x = data[:, 0], data[:, 1]
    if np.any(n < 1) or np.any(x <= 0) or len(np.unique(n)) < 3:
        raise InvalidRequest(
            "usl_points need at least 3 distinct concurrencies >= 1, each with a positive throughput",
            data={"points": len(data)},
        )
    # Noise is relative to throughput, so each row is scaled by X / N: residuals become relative errors.
    weight = x / n
    columns = np.column_stack([np.ones_like(n), n - 1, n * (n - 1)]) * weight[:, None]
    target = np.ones_like(n)
    best: tuple[float, float, float] | None = None
    best_sse = math.inf
    for keep in ((0, 1, 2), (0, 1), (0, 2), (0,)):  # drop a term whose estimate goes negative
        coef, *_ = np.linalg.lstsq(columns[:, keep], target, rcond=None)
        full = dict(zip(keep, coef.tolist(), strict=True))
        a, b, c = full[0], full.get(1, 0.0), full.get(2, 0.0)
        if a <= 0 or b < 0 or c < 0:
            continue
        sse = float(np.sum((columns @ np.array([a, b, c]) - target) ** 2))
        if sse < best_sse:
            best, best_sse = (a, b, c), sse
    if best is None:
        raise InvalidRequest("usl_points do not fit the Universal Scalability Law (throughput rises faster than N)")
    a, b, c = best
    lam1, sigma, kappa = 1 / a, b / a, c / a
    sigma, kappa = (0.0 if v < 1e-12 else v for v in (sigma, kappa))  # round-off, not contention
    predicted = lam1 * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))
    total = float(np.sum((x - x.mean()) ** 2))
    r2 = 1 - float(np.sum((x - predicted) ** 2)) / total if total > 0 else 1.0
    peak = math.sqrt((1 - sigma) / kappa) if kappa > 0 and sigma < 1 else None
    peak_x = None if peak is None else lam1 * peak / (1 + sigma * (peak - 1) + kappa * peak * (peak - 1))
    return USLFit(
        throughput_one=lam1,
        sigma=sigma,
        kappa=kappa,
        peak_concurrency=peak,
        peak_throughput=peak_x,
        r_squared=r2,
        points=len(data),
    )


def _service_rate(service_time: float | None, throughput: float | None) -> float:
    if service_time is not None and throughput is None:
        return 1 / _number("service_time", service_time, minimum=0.0, strict=True)
    if throughput is not None and service_time is None:
        return _number("per_instance_throughput", throughput, minimum=0.0, strict=True)
    raise InvalidRequest(
        "give exactly one of service_time (seconds per request) or per_instance_throughput (requests/s)"
    )


def _number(name: str, value: float, minimum: float, strict: bool = False) -> float:
    ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"above {minimum:g}" if strict else f"at least {minimum:g}"
        raise InvalidRequest(f"{name} must be a finite number {bound}, got {value!r}", data={name: value})
    return float(value)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise InvalidRequest(f"start_date must be an ISO date such as 2026-01-31, got {text!r}") from None
