"""``promptaudit card``: the audit in the adapter's Hugging Face model card (issue 25, item 5).

The card is read back with ``huggingface_hub.ModelCard.load`` (offline, from the file)
and its ``model-index`` compared with the result's numbers; an existing card keeps its
hand-written sections and metadata; a second run replaces only the generated block;
bad inputs exit 2 with the card unchanged.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.report.model_card import BEGIN_MARKER, END_MARKER
from promptaudit.result import content_sha256

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sample_result.json"
HAND_WRITTEN = """---
license: mit
language: en
model-index:
- name: my-adapter
  results:
  - task:
      type: text-classification
    dataset:
      name: hold-out
      type: my-org/hold-out
    metrics:
    - type: f1
      value: 0.42
---
# My adapter

Written by hand: trained on our screening notes.

## How to use

`PeftModel.from_pretrained(base, "my-adapter")`
"""


@pytest.fixture()
def result() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def write_result(tmp_path: Path, result: dict, name: str = "r.json") -> Path:
    result = copy.deepcopy(result)
    result["integrity"] = {"algorithm": "sha256", "content_sha256": content_sha256(result)}
    path = tmp_path / name
    path.write_text(json.dumps(result), encoding="utf-8")
    return path


def adapter_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"peft_type": "PROMPT_TUNING"}')
    return folder


def metrics_of(card: ModelCard) -> dict[tuple[str, str | None], object]:
    return {(e.metric_type, e.metric_config): e for e in card.data.eval_results}


def test_new_card_round_trips_with_the_results_numbers(tmp_path, result):
    folder = adapter_dir(tmp_path)
    run = CliRunner().invoke(app, ["card", str(write_result(tmp_path, result)),
                                   "--adapter", str(folder)])
    assert run.exit_code == 0, run.output
    card = ModelCard.load(folder / "README.md")  # a local file: no network
    assert card.data.library_name == "peft" and "promptaudit" in card.data.tags
    entries = metrics_of(card)
    assert entries[("accuracy", None)].metric_value == result["task"]["accuracy"]
    for gate in result["gates"]:
        entry = entries[(gate["metric"], gate["feature"])]
        assert entry.metric_value == gate["value"]
        assert entry.metric_args["status"] == gate["status"]
        assert entry.metric_args["threshold"] == gate["threshold"]
    assert {e.dataset_name for e in card.data.eval_results} == {"builtin:screening"}
    assert card.data.model_name == result["audit"]["name"]
    text = card.text
    assert text.count(BEGIN_MARKER) == 1 and text.count(END_MARKER) == 1
    assert "## Bias, risks and limitations" in text
    assert "Verdict: FAIL" in text
    assert "| female &amp; White | 28 | 8 | 0.286 | 0.500 | yes (below 0.8) |" in text
    assert "Trust in this reading: low." in text
    assert "inconclusive" in text  # the certainty of each gate


def test_update_keeps_hand_written_sections_and_metadata(tmp_path, result):
    folder = adapter_dir(tmp_path)
    (folder / "README.md").write_text(HAND_WRITTEN, encoding="utf-8")
    path = write_result(tmp_path, result)
    assert CliRunner().invoke(app, ["card", str(path), "--adapter", str(folder)]).exit_code == 0
    first = (folder / "README.md").read_text(encoding="utf-8")
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and card.data.language == "en"
    assert card.data.model_name == "my-adapter"
    assert "Written by hand: trained on our screening notes." in card.text
    assert "## How to use" in card.text
    entries = metrics_of(card)
    assert entries[("f1", None)].metric_value == 0.42  # someone else's metric is kept
    # a second run with a changed result: only the block and promptaudit's entries change
    changed = copy.deepcopy(result)
    changed["task"]["accuracy"] = 0.5
    path = write_result(tmp_path, changed, "r2.json")
    assert CliRunner().invoke(app, ["card", str(path), "--adapter", str(folder)]).exit_code == 0
    second = (folder / "README.md").read_text(encoding="utf-8")
    card = ModelCard.load(folder / "README.md")
    assert [e.metric_value for e in card.data.eval_results if e.metric_type == "accuracy"] == [0.5]
    assert len(card.data.eval_results) == len(metrics_of(card)) == 1 + 1 + sum(
        1 for g in result["gates"] if g["value"] is not None)
    assert card.text.count(BEGIN_MARKER) == 1
    before_block = first.split("---\n", 2)[2].split(BEGIN_MARKER)[0]
    assert second.split("---\n", 2)[2].split(BEGIN_MARKER)[0] == before_block


def test_card_text_escapes_result_text(tmp_path, result):
    hostile = copy.deepcopy(result)
    hostile["audit"]["name"] = f"x {END_MARKER} <script>alert(1)</script> | [a](http://e)"
    folder = adapter_dir(tmp_path)
    path = write_result(tmp_path, hostile)
    assert CliRunner().invoke(app, ["card", str(path), "--adapter", str(folder)]).exit_code == 0
    text = (folder / "README.md").read_text(encoding="utf-8")
    body = ModelCard.load(folder / "README.md").text  # the Markdown after the metadata
    assert body.count(END_MARKER) == 1 and "<script>" not in body
    assert ModelCard.load(folder / "README.md").data.model_name == hostile["audit"]["name"]
    # and the update still finds exactly one block
    assert CliRunner().invoke(app, ["card", str(path), "--adapter", str(folder)]).exit_code == 0
    assert (folder / "README.md").read_text(encoding="utf-8") == text


@pytest.mark.parametrize("case", ["result_is_the_card", "not_a_folder", "half_block", "bad_yaml"])
def test_bad_inputs_exit_2_and_leave_the_card_alone(tmp_path, result, case):
    folder = adapter_dir(tmp_path)
    card_path = folder / "README.md"
    result_path = write_result(tmp_path, result)
    adapter = folder
    if case == "result_is_the_card":
        result_path = write_result(folder, result, "README.md")
        expected = "is the result JSON of this run"
    elif case == "not_a_folder":
        adapter = tmp_path / "missing"
        expected = "not a folder"
    elif case == "half_block":
        card_path.write_text(HAND_WRITTEN + "\n" + BEGIN_MARKER + "\nold\n", encoding="utf-8")
        expected = "without its end marker"
    else:
        card_path.write_text("---\nlicense: [mit\n---\n# x\n", encoding="utf-8")
        expected = "cannot be read"
    before = card_path.read_bytes() if card_path.exists() else None
    run = CliRunner().invoke(app, ["card", str(result_path), "--adapter", str(adapter)])
    assert run.exit_code == 2, run.output
    assert expected in run.output and "Traceback" not in run.output
    assert (card_path.read_bytes() if card_path.exists() else None) == before


def test_the_card_is_the_declared_output_and_never_the_result(tmp_path, result):
    """`card` declares ADAPTER/README.md (paths.plan_card); a result stored there is refused."""
    from promptaudit.paths import plan_card

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    victim = adapter / "README.md"
    victim.write_text(json.dumps(result))
    assert plan_card(victim, adapter).path("model card") == victim
    run = CliRunner().invoke(app, ["card", str(victim), "--adapter", str(adapter)])
    assert run.exit_code == 2, run.output
    assert json.loads(victim.read_text()) == result
