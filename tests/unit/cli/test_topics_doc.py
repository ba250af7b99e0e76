"""docs/topics.md is the generator's output: a new action or topic shows there, or CI fails."""

from __future__ import annotations

from pathlib import Path

from bridge.app import all_action_specs
from bridge.cli.topics_doc import topics_markdown
from bridge.config import Settings

DOC = Path(__file__).parents[3] / "docs" / "topics.md"
REGENERATE = "tencent2mqtt topics --markdown -o docs/topics.md"


def test_the_committed_reference_is_what_the_generator_writes() -> None:
    text = topics_markdown(Settings(), all_action_specs())
    assert DOC.read_text(encoding="utf-8") == text, f"docs/topics.md is stale: run `{REGENERATE}`"


def test_every_action_and_shorthand_is_in_the_reference() -> None:
    text = topics_markdown(Settings(), all_action_specs())
    for spec in all_action_specs():
        assert f"### `{spec.key}`" in text
    assert "`tencent2mqtt/ivh/<sid>/text`" in text
