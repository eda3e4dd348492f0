"""The /api/v1 REST API: tools, templates, IPRs, monitoring, the OpenAPI document and the error shape."""

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx2
import jsonschema  # type: ignore[import-untyped]  # no stubs; used only to check schemas
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mcp.server import MCPServer
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from alma_mcp import __version__
from alma_mcp.audit import AuditLog
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.server.app import build_server
from alma_mcp.services import Services
from alma_mcp.settings import Settings
from alma_mcp.web.rest import rest_routes
from tests.mcp_helpers import ALL_TOOLS

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8000"
API = "/api/v1"
SHOP: dict[str, Any] = {
    "name": "shop",
    "resources": [
        {"name": "db", "type": "database", "provider": "simulation"},
        {"name": "web", "type": "compute", "provider": "simulation", "dependencies": ["db"]},
    ],
}
KEY = Principal(id="key:ci", roles=frozenset({Role.VIEWER, Role.PROPOSER, Role.DEPLOYER}))
ALICE = Principal(id="user:alice", roles=frozenset({Role.VIEWER, Role.APPROVER}))
READER = Principal(id="key:reader", roles=frozenset({Role.VIEWER}))
NOBODY = Principal(id="key:nobody", roles=frozenset())


@pytest.fixture
def settings() -> Settings:
    return Settings(db_path=":memory:", sim_time_scale=0.0)  # simulated deploys take no time


class Api:
    """The REST routes in a bare Starlette app, called as one principal or another."""

    def __init__(self, services: Services, rate_stats: Any = None) -> None:
        self.services = services
        self.server: MCPServer[Services] = build_server(services)
        self.audit = AuditLog(services.store)
        self.routes = rest_routes(services, self.server, rate_stats=rate_stats, audit=self.audit)
        self.app = Starlette(routes=self.routes)

    def client(self, principal: Principal | None = None) -> httpx2.AsyncClient:
        app = self.app

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            if principal is not None and scope["type"] == "http":
                scope.setdefault("state", {})["principal"] = principal
            await app(scope, receive, send)

        return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=asgi), base_url=BASE)


@pytest.fixture
def api(services: Services) -> Api:
    return Api(services)


@pytest.fixture
async def http(api: Api) -> AsyncIterator[httpx2.AsyncClient]:
    async with api.client(KEY) as client:
        yield client


def error_of(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the one error shape, exactly, and return its ``error`` member."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"ok", "status", "error"}
    assert body["ok"] is False
    assert body["status"] == status
    assert set(body["error"]) == {"code", "message", "data"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert isinstance(body["error"]["data"], dict)
    error: dict[str, Any] = body["error"]
    return error


# -- tools -------------------------------------------------------------------------------------------


async def test_tools_are_listed_with_descriptions_schemas_and_the_role_they_need(http: httpx2.AsyncClient) -> None:
    response = await http.get(f"{API}/tools")
    assert response.status_code == 200
    tools = {t["name"]: t for t in response.json()["tools"]}
    assert sorted(tools) == ALL_TOOLS
    assert tools["ipr_create"]["input_schema"]["required"] == ["title"]
    assert tools["ipr_review"]["role"] == "approver"
    assert tools["list_templates"]["annotations"]["readOnlyHint"] is True
    assert tools["ipr_deploy"]["output_schema"]["title"] == "DeployOutcome"
    assert all(t["description"] for t in tools.values())


async def test_a_tool_runs_by_name_and_answers_its_structured_result(http: httpx2.AsyncClient) -> None:
    response = await http.post(f"{API}/tools/list_templates", json={"category": "database"})
    assert response.status_code == 200
    assert [t["name"] for t in response.json()["templates"]] == ["postgres-ha", "redis-cluster"]


async def test_a_tool_runs_as_the_callers_principal(api: Api, http: httpx2.AsyncClient) -> None:
    response = await http.post(f"{API}/tools/ipr_create", json={"title": "shop", "blueprint": SHOP})
    assert response.status_code == 200
    assert response.json()["ipr"]["proposer"] == "key:ci"
    async with api.client(ALICE) as alice:
        approved = await alice.post(f"{API}/tools/ipr_review", json={"ipr_id": 1, "action": "approve"})
    assert approved.json()["ipr"]["state"] == "approved"
    deployed = await http.post(f"{API}/tools/ipr_deploy", json={"ipr_id": 1})  # reports progress to nobody
    assert (deployed.json()["state"], deployed.json()["ipr_state"]) == ("succeeded", "deployed")
    status = await http.post(f"{API}/tools/deployment_status", json={"ipr_id": 1})
    assert status.json()["actor"] == "key:ci"


async def test_a_tool_the_principal_may_not_call_is_refused_before_it_runs(api: Api) -> None:
    async with api.client(READER) as reader:
        refused = await reader.post(f"{API}/tools/ipr_create", json={"title": "x", "blueprint": SHOP})
    error = error_of(refused, 403, "auth.forbidden")
    assert error["message"] == "key:reader needs the 'proposer' role to call ipr_create; it has: viewer"
    assert api.services.iprs.iprs.page(None, 10, None) == []


async def test_a_coded_tool_error_keeps_its_code_and_status(http: httpx2.AsyncClient) -> None:
    missing = error_of(await http.post(f"{API}/tools/ipr_get", json={"ipr_id": 42}), 404, "ipr.not_found")
    assert missing == {"code": "ipr.not_found", "message": "no IPR 42; list them with ipr_list", "data": {"ipr_id": 42}}
    template = error_of(
        await http.post(f"{API}/tools/customize_template", json={"template": "nope"}), 404, "template.not_found"
    )
    assert template["message"].startswith("no template 'nope'; available:")


async def test_tool_calls_with_bad_input_get_400_404_and_422(http: httpx2.AsyncClient) -> None:
    unknown = error_of(await http.post(f"{API}/tools/no_such_tool", json={}), 404, "tool.not_found")
    assert unknown["data"]["available"] == ALL_TOOLS
    wrong = error_of(
        await http.post(f"{API}/tools/customize_template", json={"template": 5}), 422, "request.unprocessable"
    )
    assert wrong["message"] == "body.template: Input should be a valid string"
    assert wrong["data"]["errors"] == [
        {"loc": ["body", "template"], "type": "string_type", "msg": "Input should be a valid string"}
    ]
    not_json = error_of(await http.post(f"{API}/tools/list_templates", content=b"{oops"), 400, "request.invalid")
    assert not_json["message"].startswith("the body is not valid JSON: ")
    array = error_of(await http.post(f"{API}/tools/list_templates", json=[1]), 422, "request.unprocessable")
    assert array["message"] == "the body must be a JSON object, not list"
    error_of(await http.post(f"{API}/tools/list_templates", content=b'{"a": NaN}'), 400, "request.invalid")
    error_of(await http.post(f"{API}/tools/list_templates", content=b'{"a": 1e999}'), 400, "request.invalid")
    error_of(await http.post(f"{API}/tools/list_templates", content=b"\xff\xfe"), 400, "request.invalid")


async def test_rest_tool_calls_are_audited_with_the_principal_and_no_values(api: Api, http: httpx2.AsyncClient) -> None:
    await http.post(f"{API}/tools/customize_template", json={"template": "nope", "parameters": {"token": "t0ps3cret"}})
    [row] = api.audit.entries()
    assert (row.kind, row.principal, row.action, row.outcome) == (
        "tool_call",
        "key:ci",
        "customize_template",
        "template.not_found",
    )
    assert row.detail["via"] == "rest"
    assert row.detail["argument_keys"] == ["parameters", "template"]
    assert "t0ps3cret" not in json.dumps(row.detail)


# -- templates ---------------------------------------------------------------------------------------


async def test_templates_are_listed_with_filters(http: httpx2.AsyncClient) -> None:
    everything = (await http.get(f"{API}/templates")).json()
    assert everything["count"] == len(everything["templates"]) == 10
    filtered = (await http.get(f"{API}/templates", params={"category": "database", "query": "redis"})).json()
    assert [t["name"] for t in filtered["templates"]] == ["redis-cluster"]
    error_of(await http.get(f"{API}/templates", params={"query": "x" * 201}), 422, "request.unprocessable")


async def test_a_template_is_read_and_customized(http: httpx2.AsyncClient) -> None:
    template = (await http.get(f"{API}/templates/redis-cluster")).json()
    assert template["template"]["name"] == "redis-cluster"
    assert template["blueprint"]["name"] == "redis-cluster"
    derived = await http.post(f"{API}/templates/redis-cluster/customize", json={"name": "cache", "scale_factor": 2})
    assert derived.status_code == 200
    assert derived.json()["blueprint"]["name"] == "cache"
    assert derived.json()["base_template"] == "redis-cluster"
    error_of(await http.get(f"{API}/templates/nope"), 404, "template.not_found")
    bad = await http.post(f"{API}/templates/redis-cluster/customize", json={"parameters": {"colour": "red"}})
    error_of(bad, 422, "template.invalid_parameter")
    extra = await http.post(f"{API}/templates/redis-cluster/customize", json={"nmae": "typo"})
    assert error_of(extra, 422, "request.unprocessable")["message"] == "body.nmae: Extra inputs are not permitted"


async def test_an_ipr_customization_of_the_wrong_shape_is_refused_by_name(http: httpx2.AsyncClient) -> None:
    # The customization object is free-form JSON: each field's type is checked before the template is touched.
    for customization, message in (
        ({"scale_factor": {"a": 1}}, "scale_factor={'a': 1} is out of range; allowed: a number in (0, 100]"),
        ({"scale_factor": "2"}, "scale_factor='2' is out of range; allowed: a number in (0, 100]"),
        ({"name": ["x"]}, "name=['x'] is out of range; allowed: text"),
        ({"parameters": [1, 2]}, "parameters=[1, 2] is out of range; allowed: an object with any of "),
    ):
        body = {"title": "t", "template": "redis-cluster", "customization": customization}
        refused = await http.post(f"{API}/iprs", json=body)
        assert error_of(refused, 422, "template.invalid_parameter")["message"].startswith(message)
    assert (await http.get(f"{API}/iprs")).json()["iprs"] == []


# -- IPRs --------------------------------------------------------------------------------------------


async def test_the_ipr_lifecycle_over_rest(api: Api, http: httpx2.AsyncClient) -> None:
    created = await http.post(f"{API}/iprs", json={"title": "Add the shop", "blueprint": SHOP})
    assert created.status_code == 201
    ipr_id = created.json()["ipr"]["id"]
    assert created.headers["location"] == f"{API}/iprs/{ipr_id}"
    assert created.json()["ipr"]["proposer"] == "key:ci"
    own = await http.post(f"{API}/iprs/{ipr_id}/review", json={"action": "approve"})
    error_of(own, 403, "auth.forbidden")
    early = await http.post(f"{API}/iprs/{ipr_id}/deploy", json={})
    error_of(early, 409, "ipr.invalid_transition")
    async with api.client(ALICE) as alice:
        approved = await alice.post(f"{API}/iprs/{ipr_id}/review", json={"action": "approve", "comment": "ok"})
    assert approved.json()["ipr"]["state"] == "approved"
    plan = (await http.post(f"{API}/iprs/{ipr_id}/deploy", json={"dry_run": True})).json()
    assert (plan["dry_run"], [c["resource"] for c in plan["changes"]]) == (True, ["db", "web"])
    deployed = (await http.post(f"{API}/iprs/{ipr_id}/deploy")).json()
    assert (deployed["state"], deployed["ipr_state"]) == ("succeeded", "deployed")
    back = (await http.post(f"{API}/iprs/{ipr_id}/rollback", json={})).json()
    assert back["ipr_state"] == "rolled_back"
    closed = (await http.post(f"{API}/iprs/{ipr_id}/close", json={"comment": "done"})).json()
    assert closed["ipr"]["state"] == "closed"
    shown = (await http.get(f"{API}/iprs/{ipr_id}")).json()
    assert [e["action"] for e in shown["events"]] == [
        "open",
        "approve",
        "deploy",
        "succeed",
        "rollback",
        "succeed",
        "close",
    ]
    listed = (await http.get(f"{API}/iprs", params={"state": "closed"})).json()
    assert [r["id"] for r in listed["iprs"]] == [ipr_id]


async def test_iprs_are_paged_and_filtered(http: httpx2.AsyncClient) -> None:
    for n in range(3):
        await http.post(f"{API}/iprs", json={"title": f"t{n}", "template": "simple-web-app"})
    first = (await http.get(f"{API}/iprs", params={"limit": 2})).json()
    assert [r["id"] for r in first["iprs"]] == [3, 2]
    rest = (await http.get(f"{API}/iprs", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert ([r["id"] for r in rest["iprs"]], rest["next_cursor"]) == ([1], None)
    error_of(await http.get(f"{API}/iprs", params={"limit": 0}), 422, "request.unprocessable")
    error_of(await http.get(f"{API}/iprs", params={"limit": "many"}), 422, "request.unprocessable")
    error_of(await http.get(f"{API}/iprs", params={"state": "bogus"}), 400, "request.invalid")


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "1.5", "99999999999999999999999999", "%C2%B2", "%D9%A1", " 1"])
async def test_an_ipr_id_that_names_nothing_is_404(http: httpx2.AsyncClient, raw: str) -> None:
    error = error_of(await http.get(f"{API}/iprs/{raw}"), 404, "ipr.not_found")
    assert error["message"].endswith("IPR ids are positive integers")
    error_of(await http.post(f"{API}/iprs/{raw}/close", json={}), 404, "ipr.not_found")


async def test_ipr_bodies_are_checked(http: httpx2.AsyncClient) -> None:
    missing = error_of(await http.post(f"{API}/iprs", json={}), 422, "request.unprocessable")
    assert missing["message"] == "body.title: Field required"
    verdict = await http.post(f"{API}/iprs/1/review", json={"action": "merge"})
    assert error_of(verdict, 422, "request.unprocessable")["data"]["errors"][0]["loc"] == ["body", "action"]
    both = await http.post(f"{API}/iprs", json={"title": "x", "blueprint": SHOP, "template": "simple-web-app"})
    error_of(both, 400, "request.invalid")


async def test_a_principal_without_roles_reads_nothing(api: Api) -> None:
    async with api.client(NOBODY) as nobody:
        for path in (
            "/iprs",
            "/iprs/1",
            "/templates",
            "/templates/redis-cluster",
            "/tools",
            "/monitoring/metrics/summary",
        ):
            error_of(await nobody.get(f"{API}{path}"), 403, "auth.forbidden")


async def test_without_an_authenticated_principal_the_local_one_acts(api: Api) -> None:
    async with api.client(None) as local:
        created = await local.post(f"{API}/iprs", json={"title": "x", "blueprint": SHOP})
    assert created.json()["ipr"]["proposer"] == "mcp:local"


# -- monitoring --------------------------------------------------------------------------------------


async def test_the_metrics_summary_counts_iprs_and_deployments(http: httpx2.AsyncClient) -> None:
    await http.post(f"{API}/iprs", json={"title": "x", "blueprint": SHOP})
    summary = (await http.get(f"{API}/monitoring/metrics/summary")).json()
    assert summary["version"] == __version__
    assert summary["uptime_seconds"] >= 0
    assert summary["iprs"]["open"] == 1
    assert sum(summary["iprs"].values()) == 1
    assert summary["deployments"] == {"running": 0, "succeeded": 0, "failed": 0, "interrupted": 0}


async def test_rate_limit_stats_come_from_the_injected_limiter(services: Services) -> None:
    async with Api(services).client(READER) as off:
        assert (await off.get(f"{API}/monitoring/rate-limit/stats")).json() == {"enabled": False}
    async with Api(services, rate_stats=lambda: {"total_requests": 3, "total_blocked": 1}).client(READER) as on:
        stats = (await on.get(f"{API}/monitoring/rate-limit/stats")).json()
    assert stats == {"enabled": True, "total_requests": 3, "total_blocked": 1}


async def test_detailed_health_reports_each_component(http: httpx2.AsyncClient) -> None:
    health = (await http.get(f"{API}/monitoring/health/detailed")).json()
    assert health["status"] == "healthy"
    assert health["database"]["status"] == "healthy"
    assert health["database"]["response_ms"] >= 0
    assert health["engines"]["simulation"]["status"] == "healthy"
    assert health["templates"] == {"status": "healthy", "response_ms": None, "detail": "", "count": 10}


async def test_a_failing_database_makes_health_503_unhealthy(api: Api, http: httpx2.AsyncClient) -> None:
    store = api.services.store
    real = store.db

    class Broken:
        def execute(self, *_: Any) -> Any:
            raise __import__("sqlite3").OperationalError("disk I/O error")

    store.db = Broken()  # type: ignore[assignment]
    try:
        response = await http.get(f"{API}/monitoring/health/detailed")
    finally:
        store.db = real
    error = error_of(response, 503, "health.unhealthy")
    assert error["message"] == "unhealthy: database, engine simulation"  # the simulation keeps its state there
    assert error["data"]["status"] == "unhealthy"
    assert error["data"]["database"]["detail"] == "OperationalError: disk I/O error"


# -- the error shape -----------------------------------------------------------------------------------


async def test_unknown_routes_and_methods_answer_in_the_error_shape(http: httpx2.AsyncClient) -> None:
    error_of(await http.get(f"{API}/nope"), 404, "http.not_found")
    error_of(await http.get(f"{API}/iprs/"), 404, "http.not_found")
    wrong = await http.delete(f"{API}/iprs")
    assert error_of(wrong, 405, "http.method_not_allowed")["data"] == {"allowed": ["GET", "HEAD", "POST"]}
    assert wrong.headers["allow"] == "GET, HEAD, POST"
    error_of(await http.put(f"{API}/openapi.json"), 405, "http.method_not_allowed")
    error_of(await http.post(f"{API}/events"), 405, "http.method_not_allowed")


async def test_an_unexpected_failure_is_a_500_without_details(
    api: Api, http: httpx2.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.services.catalog, "search", boom)
    with pytest.MonkeyPatch.context() as quiet:
        quiet.setattr("alma_mcp.web.responses.logger.disabled", True)
        error = error_of(await http.get(f"{API}/templates"), 500, "http.internal")
    assert "secret" not in error["message"]
    assert "RuntimeError" not in json.dumps(error)
    assert error["message"] == f"internal error; quote id {error['data']['error_id']} when reporting it"


# -- the OpenAPI document -------------------------------------------------------------------------------


def mounted(api: Api) -> set[tuple[str, str]]:
    [mount] = api.routes
    assert isinstance(mount, Mount)
    found = set()
    for route in mount.routes:
        assert isinstance(route, Route)
        assert route.methods is not None
        found |= {(m, mount.path + route.path) for m in route.methods if m != "HEAD"}
    return found


async def test_the_openapi_document_lists_exactly_the_mounted_routes(api: Api, http: httpx2.AsyncClient) -> None:
    document = (await http.get(f"{API}/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == __version__
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented == mounted(api)
    assert len(documented) == 17


async def test_every_schema_in_the_document_is_valid_and_every_ref_resolves(http: httpx2.AsyncClient) -> None:
    document = (await http.get(f"{API}/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(document)
    assert refs
    assert {r.removeprefix("#/components/schemas/") for r in refs} <= set(schemas)
    create = document["paths"][f"{API}/iprs"]["post"]
    body_ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schemas[body_ref.rsplit("/", 1)[1]]["required"] == ["title"]
    assert {p["name"] for p in document["paths"][f"{API}/iprs"]["get"]["parameters"]} == {"state", "limit", "cursor"}


# -- property: every route, any input --------------------------------------------------------------------

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=12,
)
FIELD_NAMES = ["title", "description", "blueprint", "template", "customization", "action", "comment", "dry_run", "name",
               "scale_factor", "parameters", "category", "complexity", "query", "ipr_id", "deployment_id", "state",
               "limit", "cursor", "a", "b", "text", "strict", "current"]  # fmt: skip
FIELD_VALUES = st.one_of(
    json_value,
    st.sampled_from(["simple-web-app", "redis-cluster", "approve", "reject", "open", "database", "nope", ""]),
    st.just(SHOP),
    st.integers(-3, 5),
)
shaped_body = st.dictionaries(st.sampled_from(FIELD_NAMES), FIELD_VALUES, max_size=5)
raw_body = st.binary(max_size=40) | st.sampled_from([b"", b"{", b"null", b"[]", b'"x"', b'{"a": NaN}', b"1e999"])
bodies = st.one_of(
    st.none(), shaped_body.map(json.dumps).map(str.encode), json_value.map(json.dumps).map(str.encode), raw_body
)
TEMPLATES = ["simple-web-app", "redis-cluster", "postgres-ha", "ha-web-app", "nope"]
path_ids = st.one_of(
    st.integers(1, 4).map(str),
    st.sampled_from(TEMPLATES),
    st.integers(-(10**30), 10**30).map(str),
    st.text(min_size=1, max_size=20),
    st.sampled_from(["1", "2", "0", "-1", "1e3", "０", "١", "99999999999999999999", "redis-cluster", "list_templates"]),
)
tool_names = st.sampled_from(ALL_TOOLS) | st.text(min_size=1, max_size=15)
query_params = st.dictionaries(
    st.sampled_from(["state", "limit", "cursor", "category", "complexity", "query", "x"]),
    st.text(max_size=12) | st.integers(-(10**20), 10**20).map(str),
    max_size=3,
)
ROUTE_TEMPLATES = [
    ("GET", "/tools"), ("POST", "/tools/{name}"), ("GET", "/templates"), ("GET", "/templates/{name}"),
    ("POST", "/templates/{name}/customize"), ("GET", "/iprs"), ("POST", "/iprs"), ("GET", "/iprs/{ipr_id}"),
    ("POST", "/iprs/{ipr_id}/review"), ("POST", "/iprs/{ipr_id}/deploy"), ("POST", "/iprs/{ipr_id}/rollback"),
    ("POST", "/iprs/{ipr_id}/close"), ("GET", "/monitoring/metrics/summary"), ("GET", "/monitoring/rate-limit/stats"),
    ("GET", "/monitoring/health/detailed"), ("GET", "/openapi.json"),
]  # fmt: skip


text = st.text(max_size=20)
ROUTE_BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "/iprs": st.fixed_dictionaries(
        {"title": st.text(min_size=1, max_size=20)},
        optional={
            "template": st.sampled_from(TEMPLATES),
            "blueprint": st.just(SHOP) | json_value,
            "description": text,
            "customization": st.dictionaries(st.sampled_from(["name", "scale_factor", "parameters"]), FIELD_VALUES),
        },
    ),
    "/iprs/{ipr_id}/review": st.fixed_dictionaries(
        {"action": st.sampled_from(["approve", "request_changes", "reject"])}, optional={"comment": text}
    ),
    "/iprs/{ipr_id}/deploy": st.fixed_dictionaries({}, optional={"dry_run": st.booleans()}),
    "/iprs/{ipr_id}/close": st.fixed_dictionaries({}, optional={"comment": text}),
    "/templates/{name}/customize": st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["cache", "Bad Name", ""]) | text,
            "scale_factor": st.floats(-1, 200, allow_nan=False),
            "parameters": st.dictionaries(
                st.sampled_from(["instance_count", "cpu_per_instance", "memory_per_instance", "environment"]),
                FIELD_VALUES | st.sampled_from(["2", "500m", "8GB", "prod", "16Ti"]),
                max_size=3,
            ),
        },
    ),
    "/tools/{name}": shaped_body,
}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, str, dict[str, str], bytes | None]:
    method, template = draw(st.sampled_from(ROUTE_TEMPLATES))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    name = draw(tool_names) if template.startswith("/tools/") else draw(path_ids)
    path = template.replace("{name}", quote(name, safe="")).replace("{ipr_id}", quote(draw(path_ids), safe=""))
    body = draw(bodies)
    if template in ROUTE_BODIES and draw(st.booleans()):
        body = json.dumps(draw(ROUTE_BODIES[template])).encode()
    return method, template, API + path, draw(query_params), body


def response_schema(document: dict[str, Any], method: str, template: str, status: int) -> dict[str, Any] | None:
    operation = document["paths"][API + template][method.lower()]
    response = operation["responses"].get(str(status)) or operation["responses"]["default"]
    content = response.get("content", {}).get("application/json")
    if content is None:
        return None
    return {**content["schema"], "components": document["components"]}


@dataclass(repr=False)
class Target:
    """The client and the document under test (a short repr keeps Hypothesis' reports readable)."""

    client: httpx2.AsyncClient
    document: dict[str, Any]


@pytest.fixture
async def target(services: Services) -> AsyncIterator[Target]:
    async with Api(services).client(KEY) as client:
        yield Target(client, (await client.get(f"{API}/openapi.json")).json())


@hypothesis_settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
async def test_any_input_to_any_route_gets_a_documented_answer_and_never_a_500(
    target: Target, request: tuple[str, str, str, dict[str, str], bytes | None]
) -> None:
    client, document = target.client, target.document
    method, template, path, params, body = request
    response = await client.request(method, path, params=params, content=body)
    assert response.status_code < 500, response.text
    payload = response.json()
    if response.status_code >= 300:
        assert set(payload) == {"ok", "status", "error"}, payload
        assert payload["ok"] is False
        assert payload["status"] == response.status_code
        assert set(payload["error"]) == {"code", "message", "data"}
        assert isinstance(payload["error"]["code"], str)
        assert isinstance(payload["error"]["message"], str)
        assert isinstance(payload["error"]["data"], dict)
    elif API + template in document["paths"] and method.lower() in document["paths"][API + template]:
        schema = response_schema(document, method, template, response.status_code)
        if schema is not None:
            jsonschema.validate(payload, schema, cls=jsonschema.Draft202012Validator)
