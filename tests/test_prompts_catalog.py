"""prompts/*.md: loading, validation at start-up (a bad or duplicate file is named), and safe rendering."""

from pathlib import Path

import pytest

from alma_mcp.council import PROMPT_NAMES, PROMPT_VARIABLES, load_prompts
from alma_mcp.errors import ConfigError, InvalidRequest
from alma_mcp.prompts_catalog import PromptCatalog, load_prompt_file
from alma_mcp.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
---
name: greet
title: Greet
description: Say hello.
arguments:
  - name: who
    description: Whom to greet
    required: true
  - name: mood
    description: How
---
Hello {{ who }} ({{mood}}), see {{ subject }}.
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_prompts_load_with_their_arguments(settings: Settings) -> None:
    catalog = load_prompts(settings)
    assert sorted(catalog.names()) == sorted(PROMPT_NAMES)
    for name in ("architect_review", "secops_review", "finops_review", "council_review"):
        spec = catalog.get(name)
        assert [(a.name, a.required) for a in spec.arguments] == [
            ("ipr_id", False),
            ("template", False),
            ("blueprint", False),
        ]
        assert {"subject", "proposal", "checks", "contract"} <= spec.placeholders
    assert catalog.get("council_review").placeholders >= {"decision_rule"}
    assert [(a.name, a.required) for a in catalog.get("design_system").arguments] == [
        ("requirements", True),
        ("template", False),
        ("budget", False),
    ]
    assert [(a.name, a.required) for a in catalog.get("troubleshoot").arguments] == [
        ("symptoms", True),
        ("ipr_id", False),
        ("template", False),
    ]


def test_a_catalog_loads_every_markdown_file_but_the_readme(tmp_path: Path) -> None:
    write(tmp_path, "greet.md", GOOD)
    write(tmp_path, "README.md", "not a prompt")
    catalog = PromptCatalog.from_directory(tmp_path, {"subject"})
    assert catalog.names() == ["greet"]
    spec = catalog.get("greet")
    assert spec.title == "Greet"
    assert spec.description == "Say hello."
    assert spec.placeholders == {"who", "mood", "subject"}


def test_rendering_fills_every_placeholder_in_one_pass(tmp_path: Path) -> None:
    write(tmp_path, "greet.md", GOOD)
    catalog = PromptCatalog.from_directory(tmp_path, {"subject"})
    text = catalog.render("greet", {"who": "{{ subject }}"}, {"subject": "{{ who }} and {{ mood }}"})
    # Values are inserted as they are: a value that looks like a placeholder is never expanded.
    assert text == "Hello {{ subject }} (), see {{ who }} and {{ mood }}.\n"


def test_context_cannot_override_an_argument(tmp_path: Path) -> None:
    write(tmp_path, "greet.md", GOOD)
    catalog = PromptCatalog.from_directory(tmp_path, {"subject"})
    text = catalog.render("greet", {"who": "Ada", "mood": "glad"}, {"subject": "s", "who": "Eve"})
    assert text == "Hello Ada (glad), see s.\n"


def test_windows_line_endings_and_json_braces_are_accepted(tmp_path: Path) -> None:
    body = GOOD.replace("see {{ subject }}.", 'answer {"a": {"b": 1}}').replace("\n", "\r\n")
    write(tmp_path, "greet.md", body)
    catalog = PromptCatalog.from_directory(tmp_path)
    assert catalog.render("greet", {"who": "Ada"}, {}) == 'Hello Ada (), answer {"a": {"b": 1}}\n'


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no front matter\n", "it must start with YAML front matter"),
        ("---\nname: x\ndescription: y\n", "the front matter has no closing '---' line"),
        ("---\nname: [x\n---\nbody\n", "the front matter is not YAML"),
        ("---\n- a list\n---\nbody\n", "the front matter must be a mapping"),
        ("---\nname: x\n---\nbody\n", "description: Field required"),
        ("---\nname: x\ndescription: y\nmodel: gpt\n---\nbody\n", "model: Extra inputs are not permitted"),
        ("---\nname: Bad-Name\ndescription: y\n---\nbody\n", "name: String should match pattern"),
        (
            "---\nname: x\ndescription: y\narguments:\n  - {name: a, description: d}\n  - {name: a, description: e}\n"
            "---\nbody\n",
            "argument 'a' is declared more than once",
        ),
        ("---\nname: x\ndescription: y\n---\n\n\n", "the body is empty"),
        ("---\nname: x\ndescription: y\n---\nuse {{ nothing }}\n", "the body uses {{ nothing }}, which is neither"),
        ("---\nname: x\ndescription: y\n---\nok\n{{ Who }}\n", "body line 2: '{{' must open a placeholder"),
        ("---\nname: x\ndescription: y\n---\n{{ a.b }}\n", "body line 1: '{{' must open a placeholder"),
        (
            "---\nname: x\ndescription: y\narguments:\n  - {name: subject, description: d}\n---\n{{ subject }}\n",
            "argument 'subject' has the name of a context variable",
        ),
    ],
)
def test_an_invalid_prompt_file_stops_start_up_naming_the_file(tmp_path: Path, text: str, reason: str) -> None:
    write(tmp_path, "broken.md", text)
    with pytest.raises(ConfigError) as caught:
        PromptCatalog.from_directory(tmp_path, {"subject"})
    assert caught.value.message.startswith("prompt file broken.md is invalid: ")
    assert reason in caught.value.message
    assert caught.value.data == {"file": str(tmp_path / "broken.md")}


def test_a_file_that_is_not_utf8_or_too_large_is_named(tmp_path: Path) -> None:
    (tmp_path / "latin.md").write_bytes(b"---\nname: x\ndescription: caf\xe9\n---\nbody\n")
    with pytest.raises(ConfigError, match=r"prompt file latin\.md is invalid: not UTF-8"):
        load_prompt_file(tmp_path / "latin.md")
    write(tmp_path, "huge.md", GOOD + "x" * 70_000)
    with pytest.raises(ConfigError, match=r"prompt file huge\.md is invalid: \d+ bytes, more than 65536"):
        load_prompt_file(tmp_path / "huge.md")
    with pytest.raises(ConfigError, match=r"prompt file gone\.md is invalid: cannot be read"):
        load_prompt_file(tmp_path / "gone.md")


def test_two_files_claiming_one_name_stop_start_up_naming_both(tmp_path: Path) -> None:
    write(tmp_path, "a.md", GOOD)
    write(tmp_path, "b.md", GOOD)
    with pytest.raises(ConfigError) as caught:
        PromptCatalog.from_directory(tmp_path, {"subject"})
    assert caught.value.message == "prompt file b.md claims the name 'greet', already claimed by a.md"
    assert caught.value.data["other"] == str(tmp_path / "a.md")


def test_a_folder_without_prompts_stops_start_up(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "only a readme")
    with pytest.raises(ConfigError, match=r"no prompt files \(\*\.md\) in "):
        PromptCatalog.from_directory(tmp_path)


def test_a_missing_council_prompt_stops_start_up(tmp_path: Path) -> None:
    write(tmp_path, "greet.md", GOOD)
    catalog = PromptCatalog.from_directory(tmp_path, {"subject"})
    with pytest.raises(
        ConfigError,
        match=r"^\[config.invalid\] no prompt file defines 'architect_review'; add prompts/architect_review",
    ):
        catalog.require(PROMPT_NAMES)
    catalog.require(["greet"])


def test_rendering_refuses_unknown_and_missing_arguments(tmp_path: Path) -> None:
    write(tmp_path, "greet.md", GOOD)
    catalog = PromptCatalog.from_directory(tmp_path, {"subject"})
    with pytest.raises(
        InvalidRequest, match=r"^\[request.invalid\] prompt greet has no argument 'age'; allowed: mood, who$"
    ):
        catalog.render("greet", {"who": "Ada", "age": "3"}, {"subject": "s"})
    with pytest.raises(InvalidRequest, match=r"^\[request.invalid\] prompt greet needs the argument 'who'$"):
        catalog.render("greet", {"mood": "glad"}, {"subject": "s"})
    with pytest.raises(InvalidRequest, match=r"^\[request.invalid\] no prompt 'nope'; available: greet$"):
        catalog.render("nope", {}, {})


def test_a_context_variable_the_renderer_forgot_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path, "greet.md", GOOD)
    catalog = PromptCatalog.from_directory(tmp_path, {"subject"})
    with pytest.raises(ConfigError, match=r"uses \{\{ subject \}\}, which the renderer of 'greet' does not supply"):
        catalog.render("greet", {"who": "Ada"}, {})


def test_every_shipped_prompt_uses_only_known_variables() -> None:
    catalog = PromptCatalog.from_directory(ROOT / "prompts", PROMPT_VARIABLES)
    for spec in catalog.specs():
        assert spec.placeholders <= PROMPT_VARIABLES | spec.argument_names
        assert spec.path.stem == spec.name
