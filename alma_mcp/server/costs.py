"""Cost and capacity tools: estimate, optimise, capacity planning, forecasting; and alma://pricing."""

import json
from typing import Annotated, Any

from mcp.server import MCPServer
from pydantic import Field

from alma_mcp.analysis.capacity import CapacityReport, calculate_capacity
from alma_mcp.analysis.cost import CostEstimate, estimate_resources
from alma_mcp.analysis.forecast import Forecast, forecast_metrics
from alma_mcp.analysis.optimize import CostOptimization, optimize_costs
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.gcpause import without_gc
from alma_mcp.server.analysis import BlueprintArg
from alma_mcp.server.toolkit import READ_ONLY, coded_errors
from alma_mcp.services import Services

Profile = Annotated[str | None, Field(description="Price profile (see alma://pricing); default: the catalogue's")]


def register(server: MCPServer[Any], services: Services) -> None:
    limits = services.limits
    budget = services.settings.output_max_items

    @server.tool(name="estimate_resources", title="Estimate resources and cost", annotations=READ_ONLY)
    @coded_errors
    @without_gc  # loading and analysing one blueprint is one bulk section (see gcpause)
    def estimate_resources_tool(
        blueprint: BlueprintArg,
        profile: Profile = None,
        host_cpu: Annotated[float | None, Field(gt=0, le=4096, description="vCPUs per host")] = None,
        host_memory_gib: Annotated[float | None, Field(gt=0, le=65536, description="GiB per host")] = None,
    ) -> CostEstimate:
        """Size and price a blueprint: per resource and in total, cpu, memory and storage (replicas
        and autoscaling min/max counted), monthly cost with its breakdown and the unit prices used,
        and how many hosts of a given size it needs (First-Fit-Decreasing with reserved overhead)."""
        estimate = estimate_resources(
            load_blueprint(blueprint, limits), services.prices, profile, host_cpu, host_memory_gib
        )
        if len(estimate.resources) > budget:
            estimate = estimate.model_copy(update={"resources": estimate.resources[:budget]})
            estimate.assumptions.append(f"only the first {budget} resources are listed; totals count all")
        return estimate

    @server.tool(name="optimize_costs", title="Find cost savings", annotations=READ_ONLY)
    @coded_errors
    @without_gc  # loading and analysing one blueprint is one bulk section (see gcpause)
    def optimize_costs_tool(
        blueprint: BlueprintArg,
        usage: Annotated[
            dict[str, Any] | None,
            Field(
                description="Observed usage per resource name: {cpu: [samples] | {p50, p90, p99, max}, memory: "
                "(MiB) ..., storage_used: MiB, days: N}; without it, recommendations come from the blueprint"
            ),
        ] = None,
        target_utilisation: Annotated[float, Field(gt=0, lt=1, description="Utilisation to size for")] = 0.7,
        profile: Profile = None,
    ) -> CostOptimization:
        """Cost recommendations: right-sizing from usage (VPA style: P90 plus 15% margin, with floors),
        storage class changes, consolidation, idle resources and over-replication outside
        production, each with before and after cost, savings and risk; savings add up exactly."""
        return optimize_costs(load_blueprint(blueprint, limits), services.prices, usage, target_utilisation, profile)

    @server.tool(name="calculate_capacity", title="Plan capacity (M/M/c)", annotations=READ_ONLY)
    @coded_errors
    def calculate_capacity_tool(
        arrival_rate: Annotated[float, Field(description="Requests per second arriving")],
        service_time: Annotated[float | None, Field(description="Seconds one instance spends per request")] = None,
        per_instance_throughput: Annotated[
            float | None, Field(description="Or: requests per second one instance serves")
        ] = None,
        target_wait: Annotated[float | None, Field(description="Longest acceptable queueing wait, seconds")] = None,
        target_utilisation: Annotated[float, Field(description="Highest acceptable utilisation, below 1")] = 0.7,
        percentile: Annotated[float, Field(description="Wait percentile the target applies to")] = 0.95,
        growth_rate_monthly: Annotated[float | None, Field(description="Traffic growth per month, e.g. 0.1")] = None,
        horizon_months: Annotated[int | None, Field(description="Months to look ahead with growth")] = None,
        current_instances: Annotated[int | None, Field(description="Instances running now")] = None,
        usl_points: Annotated[
            list[tuple[float, float]] | None,
            Field(description="Measured (concurrency, throughput) points for a Universal Scalability Law fit"),
        ] = None,
        start_date: Annotated[str | None, Field(description="ISO date growth starts from (for run-out dates)")] = None,
    ) -> CapacityReport:
        """Instances needed from an M/M/c queue (numerically stable Erlang C, Little's law,
        utilisation, wait-time percentile); with growth and a horizon, when capacity runs out; with
        measured points, a Universal Scalability Law fit."""
        return calculate_capacity(
            arrival_rate,
            service_time,
            per_instance_throughput,
            target_wait,
            target_utilisation,
            percentile,
            growth_rate_monthly,
            horizon_months,
            current_instances,
            usl_points,
            start_date,
        )

    @server.tool(name="forecast_metrics", title="Forecast a metric", annotations=READ_ONLY)
    @coded_errors
    def forecast_metrics_tool(
        values: Annotated[list[float], Field(min_length=1, description="The observed series, oldest first")],
        horizon: Annotated[int, Field(ge=1, le=10_000, description="Steps to forecast")],
        timestamps: Annotated[list[str] | None, Field(description="ISO timestamps, one per value")] = None,
        season_length: Annotated[int | None, Field(ge=2, description="Steps per season; detected if omitted")] = None,
        threshold: Annotated[float | None, Field(description="Say when the forecast crosses this")] = None,
    ) -> Forecast:
        """Holt-Winters (ETS) forecast: season detected by autocorrelation when not given, additive or
        multiplicative chosen by fit, parameters optimised, 80% and 95% prediction intervals,
        holdout MAPE and MASE, and when a threshold is crossed."""
        forecast = forecast_metrics(values, horizon, timestamps, season_length, threshold)
        if len(forecast.points) > budget:
            forecast = forecast.model_copy(update={"points": forecast.points[:budget]})
        return forecast

    @server.resource(
        "alma://pricing",
        name="pricing",
        title="Price catalogue",
        description="Unit prices per provider profile (vCPU-hour, GiB-RAM-hour, storage per class, load "
        "balancers, public IPs, GPU), the default profile and where each number comes from.",
        mime_type="application/json",
    )
    def pricing() -> str:
        return json.dumps(services.prices.as_resource(), indent=2, sort_keys=True)
