"""``alma-mcp call`` and ``alma-mcp templates``: in-process, exact exit codes and output."""

import json

import pytest

from alma_mcp.cli import EXIT_OK, EXIT_TOOL_ERROR, EXIT_USAGE, main
from tests.mcp_helpers import ALL_TOOLS


@pytest.fixture(autouse=True)
def memory_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALMA_DB_PATH", ":memory:")


def test_call_prints_the_structured_result_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "list_templates", "--args", '{"category": "database"}']) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 2
    assert [t["name"] for t in out["templates"]] == ["postgres-ha", "redis-cluster"]


def test_a_tool_error_exits_non_zero_with_the_coded_message_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["call", "customize_template", "--args", '{"template": "nope"}']) == EXIT_TOOL_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("[template.not_found] no template 'nope'; available: api-gateway, ")


def test_an_unknown_tool_names_the_available_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "deploy_everything"]) == EXIT_TOOL_ERROR
    assert capsys.readouterr().err == (
        f"alma-mcp: [tool.not_found] no tool 'deploy_everything'; available: {', '.join(ALL_TOOLS)}\n"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "[cli.invalid_args] --args is not JSON"),
        ("[1, 2]", "[cli.invalid_args] --args must be a JSON object"),
    ],
)
def test_bad_args_are_usage_errors(capsys: pytest.CaptureFixture[str], raw: str, message: str) -> None:
    assert main(["call", "list_templates", "--args", raw]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_a_bad_setting_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ALMA_MAX_DEPTH", "deep")
    assert main(["templates", "list"]) == EXIT_USAGE
    assert "ALMA_MAX_DEPTH: Input should be a valid integer" in capsys.readouterr().err


def test_templates_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["templates", "list"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10
    assert lines[0].split()[0] == "api-gateway"
    assert main(["templates", "show", "kubernetes-cluster"]) == EXIT_OK
    assert "name: microservices-k8s" in capsys.readouterr().out
    assert main(["templates", "show", "nope"]) == EXIT_TOOL_ERROR
    assert "[template.not_found]" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert "serve" in capsys.readouterr().err
