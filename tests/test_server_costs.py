"""Cost and capacity tools through the protocol: real numbers, coded bad input, the pricing resource."""

import json
import math

import pytest
from mcp import Client

from tests.mcp_helpers import call_error, call_ok, read_text

pytestmark = pytest.mark.anyio


async def test_estimate_a_template_lists_unit_prices(client: Client) -> None:
    text, _ = await read_text(client, "alma://templates/simple-web-app")
    out = await call_ok(client, "estimate_resources", {"blueprint": text})
    assert out["profile"] == "opencost"
    assert out["monthly_cost"] > 0
    assert math.isclose(sum(r["monthly_cost"] for r in out["resources"]), out["monthly_cost"], abs_tol=0.011)
    assert out["unit_prices"]["hours_per_month"] == 730
    assert out["hosts"]["hosts"] >= 1


async def test_unknown_profile_is_a_request_error(client: Client) -> None:
    text, _ = await read_text(client, "alma://templates/simple-web-app")
    error = await call_error(client, "estimate_resources", {"blueprint": text, "profile": "moon"})
    assert error.startswith("[request.invalid] ")
    assert "moon" in error


async def test_optimize_savings_add_up(client: Client) -> None:
    text, _ = await read_text(client, "alma://templates/ha-web-app")
    out = await call_ok(client, "optimize_costs", {"blueprint": text})
    assert round(out["monthly_cost_before"] - out["monthly_cost_after"], 2) == round(out["monthly_savings"], 2)


async def test_capacity_reference_value(client: Client) -> None:
    out = await call_ok(
        client, "calculate_capacity", {"arrival_rate": 2.0, "service_time": 1.0, "target_utilisation": 0.7}
    )
    assert out["instances"] == 3
    bad = await call_error(client, "calculate_capacity", {"arrival_rate": -1.0, "service_time": 1.0})
    assert bad.startswith("[request.invalid] ")


async def test_forecast_a_seasonal_series(client: Client) -> None:
    values = [100 + 20 * math.sin(2 * math.pi * t / 24) for t in range(24 * 6)]
    out = await call_ok(client, "forecast_metrics", {"values": values, "horizon": 24})
    assert out["season_length"] == 24
    assert len(out["points"]) == 24
    nan = await call_error(client, "forecast_metrics", {"values": [1.0, 2.0, 3.0], "horizon": 5, "season_length": 24})
    assert nan.startswith("[request.invalid] ")


async def test_pricing_resource(client: Client) -> None:
    text, mime = await read_text(client, "alma://pricing")
    assert mime == "application/json"
    data = json.loads(text)
    assert data["default_profile"] == "opencost"
    assert {"opencost", "proxmox-onprem", "docker-host", "kubernetes-node-pool"} <= set(data["profiles"])
