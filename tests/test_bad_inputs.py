"""Bad input through the CLI: exit 2, one ``error:`` line that names the culprit, nothing written.

Every case is a file, field or value an auditor could plausibly hand to promptaudit
(a typo in a spec, a client's CSV with a gap in it, a vendor's adapter for another
model). Each must end with exit code 2, exactly one ``error: ...`` line on stderr
(logged ``WARNING:`` lines may precede it) that names the file/field/value and says
what is allowed, no traceback, and no new or changed file in the output folder: a
previous report there stays byte-identical.

The fixtures are tiny (a 32-wide BERT, a 4-token prompt, 40 rows) so the whole module
runs in well under a minute.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from promptaudit.cli import app

LABELS = ["negative", "positive"]
#: Report files a previous audit named ``bad`` left in the output folder.
PREVIOUS = {
    "bad.json": b'{"previous": "report"}\n',
    "bad.html": b"<html>previous</html>\n",
    "bad.junit.xml": b"<testsuites/>\n",
    "bad.md": b"previous summary\n",
    "notes.txt": b"someone else's file\n",
    "bad.bias_audit.csv": b"sentence,label,gender\nprevious,positive,male\n",
}


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_bert_dir, sentences) -> dict[str, Path]:
    """A valid audit's ingredients: tiny BERT, a 4x32 prompt file, a 40-row CSV."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    prompt = folder / "prompt.safetensors"
    save_file({"prompt": torch.randn(4, 32, generator=torch.Generator().manual_seed(0))},
              str(prompt))
    rows = [{"sentence": sentences[i % len(sentences)], "label": LABELS[i % 2],
             "gender": ["female", "male"][(i // 2) % 2]} for i in range(40)]
    data = folder / "eval.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    return {"model": Path(tiny_bert_dir), "prompt": prompt, "data": data, "folder": folder}


def base_spec(inputs: dict[str, Path]) -> dict:
    return {
        "name": "bad",
        "seed": 0,
        "model": {"base": str(inputs["model"]), "task": "sequence-classification",
                  "allow_untrained_head": True,  # a bare prompt on the head-less tiny BERT
                  "labels": list(LABELS), "positive_label": "positive", "max_length": 16},
        "prompt": {"path": str(inputs["prompt"])},
        "data": {"path": str(inputs["data"]), "text_column": "sentence",
                 "label_column": "label", "sensitive_features": ["gender"]},
        "projection": {"top_k": 2, "fidelity": False},
        "attribution": {"n_steps": 2, "max_examples": 2},
        "fairness": {"bootstrap": 0, "min_group_size": 2},
        "baselines": {"projected": False, "init_text": False},
        "gates": [{"metric": "demographic_parity_ratio", "min": 0.5}],
    }


@dataclass
class Ctx:
    """What a case builder gets: the valid inputs, a scratch folder, fixtures on demand."""

    inputs: dict[str, Path]
    tmp: Path
    out: Path
    request: pytest.FixtureRequest
    spec: dict = field(default_factory=dict)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def csv(self, rows: list[dict] | pd.DataFrame, name: str = "data.csv") -> Path:
        path = self.tmp / name
        pd.DataFrame(rows).to_csv(path, index=False)
        return path

    def rows(self) -> list[dict]:
        return pd.read_csv(self.inputs["data"]).to_dict("records")

    def tensor(self, tensor: torch.Tensor, name: str = "p.safetensors") -> Path:
        path = self.tmp / name
        if path.suffix == ".safetensors":
            save_file({"prompt": tensor.contiguous()}, str(path))
        else:
            torch.save(tensor, path)
        return path

    def run(self, spec: dict | str | None = None, *extra: str) -> list[str]:
        """``promptaudit run SPEC --out OUT``; the spec is a dict (dumped) or raw YAML text."""
        spec = self.spec if spec is None else spec
        text = spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False)
        return ["run", str(self.write("audit.yaml", text)), "--out", str(self.out), *extra]

    def with_(self, dotted: str, value) -> dict:
        """A copy of the valid spec with one dotted key set (``None`` removes it)."""
        spec = json.loads(json.dumps(self.spec))
        *parents, last = dotted.split(".")
        node = spec
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if value is None:
            node.pop(last)
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return spec

    def tool(self, command: str, *extra: str, prompt: Path | str | None = None,
             model: Path | str | None = None, data: Path | str | None = None) -> list[str]:
        """``predict``/``project``/``attribute`` on the valid inputs (any of them replaced)."""
        args = [command, "--model", str(model or self.inputs["model"]),
                "--prompt", str(prompt or self.inputs["prompt"]),
                "--allow-untrained-head"]  # a bare prompt on the head-less tiny BERT
        if command != "project" or data is not None:
            args += ["--data", str(data or self.inputs["data"]), "--text-column", "sentence"]
        if command == "predict":
            args += ["--out", str(self.out / "predictions.csv")]
        return [*args, "--task", "sequence-classification", "--labels", "negative,positive",
                *extra]


Case = Callable[[Ctx], tuple[list[str], list[str]]]


def _prefix_case(c: Ctx):
    adapter = c.request.getfixturevalue("tiny_bert_prefix_adapter")
    return c.run(c.with_("prompt.path", str(adapter))), [str(adapter), "PREFIX_TUNING",
                                                          "allowed: PROMPT_TUNING or P_TUNING"]


def _foreign_adapter_case(c: Ctx):  # a MiniLM adapter (hidden 384) audited on the 32-wide BERT
    adapter = c.request.getfixturevalue("minilm_seqcls_adapter")
    return c.run(c.with_("prompt.path", str(adapter))), [
        str(adapter), "hidden size 384 does not match the model's hidden size 32"]


def _pickle_case(c: Ctx):
    path, _ = c.request.getfixturevalue("malicious_pt")
    return c.run(c.with_("prompt.path", str(path))), [str(path), "not plain tensors"]


def _pickle_list_case(c: Ctx):
    path = c.tmp / "list.pt"
    torch.save([torch.zeros(4, 32), torch.zeros(4, 32)], path)
    return c.run(c.with_("prompt.path", str(path))), [str(path), "holds a list",
                                                       "not a tensor or a dict of tensors"]


def _bad_adapter_json(c: Ctx):
    adapter = c.tmp / "adapter"
    shutil.copytree(c.request.getfixturevalue("tiny_bert_seqcls_adapter"), adapter)
    (adapter / "adapter_config.json").write_text("{not json", encoding="utf-8")
    return c.run(c.with_("prompt.path", str(adapter))), ["adapter_config.json", "not valid JSON"]


def _lora_case(c: Ctx):
    adapter = c.request.getfixturevalue("tiny_bert_lora_adapter")
    return c.run(c.with_("prompt.path", str(adapter))), ["'LORA' is not a soft prompt",
                                                          "allowed: PROMPT_TUNING, P_TUNING"]


def _head_size_case(c: Ctx):  # a 2-output adapter head audited with three labels
    adapter = c.request.getfixturevalue("tiny_bert_seqcls_adapter")
    spec = c.with_("prompt.path", str(adapter))
    spec["model"]["labels"] = ["a", "b", "c"]
    spec["model"]["positive_label"] = "c"
    return c.run(spec), ["labels: 3 labels given", "classifier head has 2 outputs"]


# ------------------------------------------- outputs that would clobber an input (issue 1)
def _train_args(c: Ctx, out: Path | str, data: Path | None = None) -> list[str]:
    return ["train", "--model", str(c.inputs["model"]), "--data", str(data or c.inputs["data"]),
            "--text-column", "sentence", "--label-column", "label", "--out", str(out),
            "--epochs", "1"]


def _report_over_its_data(c: Ctx):  # data at OUT/bad.json, audit "bad", --out OUT
    return c.run(c.with_("data.path", str(c.out / "bad.json"))), [
        "bad.json", "is the data file of this run", "choose another output path"]


def _predict_over_its_data(c: Ctx):
    data = c.csv(c.rows(), "x.csv")
    args = c.tool("predict", data=data)
    args[args.index("--out") + 1] = str(data)
    return args, ["--out", "x.csv", "is the data file of this run"]


def _audit_into_the_adapter(c: Ctx):  # name adapter_config, --out ADAPTER
    adapter = c.tmp / "adapter"
    shutil.copytree(c.request.getfixturevalue("tiny_bert_seqcls_adapter"), adapter)
    spec = c.with_("prompt.path", str(adapter))
    spec["name"] = "adapter_config"
    args = c.run(spec)
    args[args.index("--out") + 1] = str(adapter)
    return args, ["--out", "is the prompt of this run"]


def _out_inside_a_symlink_to_the_model(c: Ctx):
    link = c.tmp / "link-to-model"
    link.symlink_to(c.inputs["model"], target_is_directory=True)
    args = c.run()
    args[args.index("--out") + 1] = str(link / "reports")
    return args, ["link-to-model", "lies inside the model folder of this run"]


def _train_out_is_its_data(c: Ctx):
    data = c.csv(c.rows(), "small.csv")
    return _train_args(c, data, data), ["small.csv", "is the data file of this run"]


def _train_out_is_a_file(c: Ctx):
    return _train_args(c, c.write("notes.txt", "x")), [
        "notes.txt", "exists and is not a directory"]


def _train_out_is_the_model(c: Ctx):
    return _train_args(c, c.inputs["model"]), ["is the model of this run"]


def _demo_out_into_its_prompt(c: Ctx):
    from promptaudit.demo import demo_prompt_dir

    return ["demo", "--out", str(demo_prompt_dir("clean"))], ["is the demo prompt of this run"]


def _in_audit_training_over_its_data(c: Ctx):
    data = c.csv(c.rows(), "train.csv")
    spec = c.with_("prompt", {"train": {
        "data": {"path": str(data), "text_column": "sentence", "label_column": "label"},
        "out": str(data), "epochs": 1}})
    return c.run(spec), ["prompt.train.out", "is the training data of this run"]


# ---------------------------------------------------- hostile or confusing files (issues 2-7)
def _typo_local_model(c: Ctx):
    (c.tmp / "mymodels").mkdir()
    return c.run(c.with_("model.base", "mymodels/minilm")), [
        "mymodels/minilm", "directory not found"]


def _escape_in_column_name(c: Ctx):
    path = c.write("esc.csv", "sen\x1b[31mtence,label,gender\nok,positive,male\n"
                              "fine,negative,female\n")
    return c.run(c.with_("data.path", str(path))), ["esc.csv", "sen\\x1b[31mtence"]


def _lone_surrogate(c: Ctx):
    lines = [json.dumps({"sentence": "fine", "label": "positive", "gender": "male"}),
             '{"sentence": "bad \\udc80 text", "label": "negative", "gender": "female"}']
    path = c.write("s.jsonl", "\n".join(lines) + "\n")
    return c.run(c.with_("data.path", str(path))), [
        "s.jsonl", "line 2", "lone surrogate escape \\udc80"]


def _duplicate_csv_columns(c: Ctx):
    path = c.write("dup.csv", "sentence,label,gender,gender\nok,positive,male,female\n"
                              "no,negative,female,male\n")
    return c.run(c.with_("data.path", str(path))), [
        "dup.csv", "column name 'gender' appears more than once"]


def _alias_bomb(c: Ctx):
    text = "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for level in range(1, 9):
        text += f"lol{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]\n"
    return c.run(yaml.safe_dump(c.spec, sort_keys=False) + text), [
        "audit.yaml", "expands to more than 100000 values", "alias"]


def _recursive_alias(c: Ctx):
    return c.run(yaml.safe_dump(c.spec, sort_keys=False) + "loop: &x [*x]\n"), [
        "audit.yaml", "refers to itself"]


def _huge_spec(c: Ctx):
    return c.run(yaml.safe_dump(c.spec, sort_keys=False) + "# " + "x" * (1024 * 1024) + "\n"), [
        "audit.yaml", "at most 1048576 bytes"]


def _gate_nan_literal(c: Ctx):
    return ["gate", str(c.write("r.json", '{"schema_version": "1", "audit": {"name": "x"}, '
                                           '"provenance": {}, "task": {"accuracy": NaN}, '
                                           '"fairness": {}, "gates": [], "passed": true}'))], [
        "r.json", "NaN is not valid JSON"]


def _gate_audit_is_a_string(c: Ctx):
    from promptaudit.result import content_sha256

    fixture = Path(__file__).resolve().parent / "fixtures" / "sample_result.json"
    body = json.loads(fixture.read_text(encoding="utf-8"))  # a real result, but for one key
    body.pop("integrity")
    body["audit"] = "x"
    body["integrity"] = {"algorithm": "sha256", "content_sha256": content_sha256(body)}
    return ["gate", str(c.write("r.json", json.dumps(body)))], [
        "r.json", "audit: 'x' is not of type 'object'"]


def _gate_deep_nesting(c: Ctx):
    return ["gate", str(c.write("r.json", "[" * 100_000 + "]" * 100_000))], [
        "r.json", "nested deeper than 64 levels"]


CASES: dict[str, Case] = {
    # ------------------------------------------------------------ the spec file
    "spec-missing": lambda c: (["run", str(c.tmp / "nope.yaml")], ["nope.yaml", "not found"]),
    "spec-is-directory": lambda c: (["run", str(c.tmp)], ["is a directory", "audit YAML file"]),
    "spec-not-utf8": lambda c: (["run", str(c.write("a.yaml", b"name: caf\xe9\n"))],
                                ["a.yaml", "not valid UTF-8"]),
    "spec-empty": lambda c: (c.run("# nothing here\n"), ["audit.yaml", "the spec is empty"]),
    "yaml-unclosed-bracket": lambda c: (c.run("name: bad\ngates: [\n  {metric: accuracy\n"),
                                        ["audit.yaml", "YAML syntax error at line"]),
    "yaml-bad-indentation": lambda c: (c.run("name: bad\nmodel:\n  base: x\n task: y\n"),
                                       ["audit.yaml", "YAML syntax error at line 4"]),
    "yaml-tab": lambda c: (c.run("name: bad\nmodel:\n\tbase: x\n"),
                           ["audit.yaml", "YAML syntax error at line 3"]),
    "yaml-top-level-list": lambda c: (c.run("- name: bad\n"),
                                      ["expected a mapping at the top level, got list"]),
    "yaml-duplicate-key": lambda c: (
        c.run(yaml.safe_dump(c.spec, sort_keys=False) + "seed: 3\n"),
        ["audit.yaml", "duplicate key 'seed'", "line"]),
    "unknown-top-level-key": lambda c: (c.run({**c.spec, "gatez": []}),
                                        ["unknown key 'gatez'", "did you mean 'gates'?",
                                         "allowed keys here:"]),
    "misspelt-nested-key": lambda c: (c.run(c.with_("fairness.bootstap", 10)),
                                      ["'fairness.bootstap'", "did you mean 'bootstrap'?"]),
    "misspelt-gate-threshold": lambda c: (
        c.run(c.with_("gates.0", {"metric": "demographic_parity_ratio", "mn": 0.8})),
        ["unknown key 'gates.0.mn'", "did you mean 'min'?"]),
    "misspelt-model-key": lambda c: (c.run(c.with_("model.lables", ["a", "b"])),
                                     ["'model.lables'", "did you mean 'labels'?"]),
    "missing-data-section": lambda c: (c.run(c.with_("data", None)),
                                       ["missing required key 'data'"]),
    "wrong-type-bootstrap": lambda c: (c.run(c.with_("fairness.bootstrap", "lots")),
                                       ["fairness.bootstrap", "valid integer", "'lots'"]),
    "wrong-type-seed": lambda c: (c.run(c.with_("seed", 1.5)), ["seed", "1.5"]),
    "negative-seed": lambda c: (c.run(c.with_("seed", -1)), ["seed", "greater than or equal to 0"]),
    "huge-seed": lambda c: (c.run(c.with_("seed", 10**30)), ["seed", "less than or equal to"]),
    "unsupported-version": lambda c: (c.run(c.with_("version", 2)),
                                      ["version 2 is not supported", "allowed: 1"]),
    "duplicate-sensitive-feature": lambda c: (
        c.run(c.with_("data.sensitive_features", ["gender", "gender"])),
        ["data.sensitive_features", "'gender' is listed twice"]),
    "wrong-type-sensitive-features": lambda c: (
        c.run(c.with_("data.sensitive_features", "gender")),
        ["data.sensitive_features", "valid list", "'gender'"]),
    "wrong-type-gates-mapping": lambda c: (
        c.run(c.with_("gates", {"metric": "accuracy", "min": 0.5})), ["gates", "valid list"]),
    "unknown-task": lambda c: (c.run(c.with_("model.task", "translation")),
                               ["model.task", "'translation'", "sequence-classification"]),
    "unknown-device": lambda c: (c.run(c.with_("model.device", "tpu")),
                                 ["model.device", "'tpu'", "allowed: auto, cpu, cuda"]),
    "one-label": lambda c: (c.run(c.with_("model.labels", ["only"])),
                            ["model", "at least two labels"]),
    "positive-label-not-a-label": lambda c: (c.run(c.with_("model.positive_label", "yes")),
                                             ["positive_label", "'yes'", "negative"]),
    "prompt-path-and-train": lambda c: (
        c.run(c.with_("prompt.train", {"data": {"path": "x.csv"}})),
        ["exactly one of 'path' or 'train'"]),
    "name-with-path-separator": lambda c: (c.run(c.with_("name", "../../etc/evil")),
                                           ["name", "../../etc/evil", "no path separators"]),
    "name-with-slash": lambda c: (c.run(c.with_("name", "reports/x")),
                                  ["'reports/x'", "no path separators"]),
    "name-with-backslash": lambda c: (c.run(c.with_("name", "a\\b")),
                                      ["name", "no path separators"]),
    "gate-unknown-metric": lambda c: (
        c.run(c.with_("gates.0", {"metric": "demographic_parity_ration", "min": 0.8})),
        ["unknown gate metric 'demographic_parity_ration'",
         "did you mean 'demographic_parity_ratio'?", "allowed:"]),
    "gate-contradictory-thresholds": lambda c: (
        c.run(c.with_("gates.0", {"metric": "demographic_parity_ratio", "min": 0.9, "max": 0.8})),
        ["gates.0", "min 0.9 is above max 0.8", "no value could pass"]),
    "gate-without-threshold": lambda c: (
        c.run(c.with_("gates.0", {"metric": "accuracy"})), ["gates.0", "give 'min' or 'max'"]),
    "gate-ratio-above-one": lambda c: (
        c.run(c.with_("gates.0", {"metric": "demographic_parity_ratio", "min": 1.5})),
        ["gates.0", "demographic_parity_ratio", "1.5", "between 0 and 1"]),
    "gate-feature-not-sensitive": lambda c: (
        c.run(c.with_("gates.0", {"metric": "demographic_parity_ratio", "min": 0.8,
                                  "feature": "race"})),
        ["feature 'race' is not a sensitive feature", "allowed: gender"]),
    "fairness-unknown-metric": lambda c: (c.run(c.with_("fairness.metrics", ["recall"])),
                                          ["'recall' is not known", "allowed: selection_rate"]),
    "fairness-confidence-out-of-range": lambda c: (c.run(c.with_("fairness.confidence", 1.5)),
                                                   ["fairness.confidence", "1.5"]),
    "projection-top-k-zero": lambda c: (c.run(c.with_("projection.top_k", 0)),
                                        ["projection.top_k", "greater than or equal to 1", "0"]),
    "projection-unknown-metric": lambda c: (c.run(c.with_("projection.metric", "manhattan")),
                                            ["projection.metric", "'manhattan'", "cosine"]),
    "attribution-unknown-method": lambda c: (c.run(c.with_("attribution.method", "lime")),
                                             ["attribution.method", "'lime'",
                                              "integrated_gradients"]),
    "attribution-unknown-baseline": lambda c: (c.run(c.with_("attribution.baseline", "blur")),
                                               ["attribution.baseline", "'blur'", "pad"]),
    # ---------------------------------------------------------------- --set
    "set-unknown-key": lambda c: (c.run(None, "--set", "fairness.bootsrap=10"),
                                  ["'fairness.bootsrap'", "did you mean 'bootstrap'?"]),
    "set-without-equals": lambda c: (c.run(None, "--set", "fairness.bootstrap"),
                                     ["--set 'fairness.bootstrap'", "expected key=value"]),
    "set-list-index-out-of-range": lambda c: (c.run(None, "--set", "gates.5.min=0.1"),
                                              ["--set gates.5", "not an index of a list of 1"]),
    "set-into-a-string": lambda c: (c.run(None, "--set", "model.base.x=1"),
                                    ["--set model.base.x", "model.base is not a mapping"]),
    "set-empty-key-part": lambda c: (c.run(None, "--set", "fairness..bootstrap=1"),
                                     ["--set", "empty part in the dotted key"]),
    "set-wrong-type": lambda c: (c.run(None, "--set", "fairness.bootstrap=many"),
                                 ["fairness.bootstrap", "'many'"]),
    "set-bad-name": lambda c: (c.run(None, "--set", "name=a/b"), ["'a/b'", "no path separators"]),
    # ----------------------------------------------------------------- data
    "data-missing": lambda c: (c.run(c.with_("data.path", str(c.tmp / "none.csv"))),
                               ["none.csv", "data file not found"]),
    "data-is-directory": lambda c: (c.run(c.with_("data.path", str(c.tmp))),
                                    ["is a directory", "expected a data file"]),
    "data-unsupported-type": lambda c: (
        c.run(c.with_("data.path", str(c.write("d.xlsx", "x")))),
        ["d.xlsx", "unsupported data file type '.xlsx'", "allowed: .csv"]),
    "data-header-only": lambda c: (
        c.run(c.with_("data.path", str(c.write("d.csv", "sentence,label,gender\n")))),
        ["d.csv", "the data is empty"]),
    "data-zero-bytes": lambda c: (c.run(c.with_("data.path", str(c.write("d.csv", "")))),
                                  ["d.csv", "the data is empty"]),
    "data-not-utf8": lambda c: (
        c.run(c.with_("data.path", str(c.write(
            "d.csv", b"sentence,label,gender\nthe movie was good,positive,male\n"
                     b"caf\xe9 au lait,negative,female\n")))),
        ["d.csv", "line 3 is not valid UTF-8"]),
    "data-bad-jsonl": lambda c: (
        c.run(c.with_("data.path", str(c.write("d.jsonl", '{"sentence": "ok"\n')))),
        ["d.jsonl", "line 1 is not valid JSON"]),
    "data-unknown-builtin": lambda c: (c.run(c.with_("data.path", "builtin:nothing")),
                                       ["builtin:nothing", "screening"]),
    "text-column-missing": lambda c: (c.run(c.with_("data.text_column", "text")),
                                      ["eval.csv", "column 'text' not found",
                                       "available columns: sentence, label, gender"]),
    "label-column-missing": lambda c: (c.run(c.with_("data.label_column", "stars")),
                                       ["eval.csv", "column 'stars' not found"]),
    "sensitive-column-missing": lambda c: (c.run(c.with_("data.sensitive_features", ["race"])),
                                           ["eval.csv", "column 'race' not found"]),
    "text-missing-value": lambda c: (
        c.run(c.with_("data.path", str(c.csv(
            [{**r, "sentence": None if i == 3 else r["sentence"]}
             for i, r in enumerate(c.rows())])))),
        ["data.csv", "column 'sentence'", "missing text at line 5"]),
    "label-outside-label-set": lambda c: (
        c.run(c.with_("data.path", str(c.csv(
            [{**r, "label": "neutral" if i == 5 else r["label"]}
             for i, r in enumerate(c.rows())])))),
        ["data.csv", "column 'label' line 7", "'neutral'", "allowed: negative, positive"]),
    "label-index-out-of-range": lambda c: (
        c.run(c.with_("data.path", str(c.csv(
            [{**r, "label": 2 if i == 0 else i % 2} for i, r in enumerate(c.rows())])))),
        ["data.csv", "column 'label' line 2", "index 0..1"]),
    "label-missing-value": lambda c: (
        c.run(c.with_("data.path", str(c.csv(
            [{**r, "label": None if i == 7 else r["label"]} for i, r in enumerate(c.rows())])))),
        ["data.csv", "column 'label'", "missing label at line 9"]),
    "one-group-only": lambda c: (
        c.run(c.with_("data.path", str(c.csv([{**r, "gender": "female"} for r in c.rows()])))),
        ["data.csv", "column 'gender'", "only one group ('female')", "at least two groups"]),
    "one-group-after-limit": lambda c: (c.run(c.with_("data.limit", 2)),
                                        ["column 'gender'", "only one group ('female')"]),
    "sensitive-missing-value": lambda c: (
        c.run(c.with_("data.path", str(c.csv(
            [{**r, "gender": "" if i == 4 else r["gender"]} for i, r in enumerate(c.rows())])))),
        ["data.csv", "column 'gender'", "missing value at line 6"]),
    "reference-group-unknown": lambda c: (c.run(c.with_("fairness.reference_group", "other")),
                                          ["fairness.reference_group: 'other'", "eval.csv",
                                           "groups: female, male"]),
    "data-garbage-parquet": lambda c: (
        c.run(c.with_("data.path", str(c.write("d.parquet", b"not parquet at all")))),
        ["d.parquet", "could not be read as parquet"]),
    "counterfactual-suite-missing": lambda c: (
        c.run(c.with_("counterfactuals", {"suite": str(c.tmp / "terms.json")})),
        ["terms.json", "term suite file not found", "builtin:identity"]),
    "counterfactual-suite-not-utf8": lambda c: (
        c.run(c.with_("counterfactuals", {"suite": str(c.write("terms.yaml", b"\xff\xfe"))})),
        ["terms.yaml", "UTF-8"]),
    "counterfactual-unknown-feature": lambda c: (
        c.run(c.with_("counterfactuals", {"suite": "builtin:identity", "features": ["religon"]})),
        ["'religon'", "gender, race"]),
    "counterfactual-pair-column-missing": lambda c: (
        c.run(c.with_("counterfactuals", {"pair_column": "pair"})),
        ["eval.csv", "column 'pair' not found"]),
    # --------------------------------------------------------------- prompts
    "prompt-missing": lambda c: (c.run(c.with_("prompt.path", str(c.tmp / "none.safetensors"))),
                                 ["none.safetensors", "prompt not found"]),
    "prompt-unsupported-type": lambda c: (
        c.run(c.with_("prompt.path", str(c.write("p.txt", "0.1 0.2")))),
        ["p.txt", "unsupported prompt file type '.txt'", "allowed:"]),
    "prompt-rank-3": lambda c: (c.run(c.with_("prompt.path", str(c.tensor(torch.zeros(1, 4, 32))))),
                                ["p.safetensors", "shape (1, 4, 32)", "expected 2 dimensions"]),
    "prompt-rank-1": lambda c: (c.run(c.with_("prompt.path",
                                              str(c.tensor(torch.zeros(32), "p.pt")))),
                                ["p.pt", "shape (32,)", "expected 2 dimensions"]),
    "prompt-hidden-size": lambda c: (c.run(c.with_("prompt.path",
                                                   str(c.tensor(torch.zeros(4, 16))))),
                                     ["p.safetensors", "hidden size 16", "hidden size 32"]),
    "prompt-nan": lambda c: (
        c.run(c.with_("prompt.path", str(c.tensor(
            torch.zeros(4, 32).index_fill_(0, torch.tensor([2]), float("nan")))))),
        ["p.safetensors", "NaN or inf", "virtual token 2"]),
    "prompt-inf": lambda c: (
        c.run(c.with_("prompt.path", str(c.tensor(torch.full((3, 32), float("inf")), "p.pt")))),
        ["p.pt", "NaN or inf"]),
    "prompt-integer-dtype": lambda c: (
        c.run(c.with_("prompt.path", str(c.tensor(torch.zeros(4, 32, dtype=torch.int64))))),
        ["p.safetensors", "dtype torch.int64", "expected floating point"]),
    "prompt-corrupt-safetensors": lambda c: (
        c.run(c.with_("prompt.path", str(c.write("p.safetensors", b"\x00garbage" * 10)))),
        ["p.safetensors", "not a valid safetensors file"]),
    "prompt-two-tensors": lambda c: (
        c.run(c.with_("prompt.path", str(_two_tensors(c)))),
        ["two.safetensors", "holds 2 tensors", "expected exactly one"]),
    "prompt-pickle-object": _pickle_case,
    "prompt-pickle-list": _pickle_list_case,
    "prompt-prefix-tuning": _prefix_case,
    "prompt-lora-adapter": _lora_case,
    "prompt-adapter-other-base-shapes-differ": _foreign_adapter_case,
    "prompt-adapter-bad-config-json": _bad_adapter_json,
    "prompt-adapter-head-size": _head_size_case,
    "prompt-dir-not-adapter": lambda c: (c.run(c.with_("prompt.path", str(c.tmp))),
                                         ["no adapter_config.json", "not a PEFT adapter"]),
    # ---------------------------------------------------------------- models
    "model-missing-dir": lambda c: (c.run(c.with_("model.base", str(c.tmp / "nomodel"))),
                                    ["nomodel", "directory not found"]),
    "model-dir-without-config": lambda c: (c.run(c.with_("model.base", str(c.tmp))),
                                           ["has no config.json"]),
    "model-unknown-builtin": lambda c: (c.run(c.with_("model.base", "builtin:gpt5")),
                                        ["builtin:gpt5", "allowed: builtin:minilm"]),
    # ---------------------------------------------------------------- output
    "out-under-a-file": lambda c: (
        ["run", str(c.write("audit.yaml", yaml.safe_dump(c.spec))), "--out",
         str(c.write("plain-file", "x") / "reports")],
        ["plain-file", "cannot create the output directory"]),
    "out-is-a-file": lambda c: (
        ["run", str(c.write("audit.yaml", yaml.safe_dump(c.spec))), "--out",
         str(c.write("plain-file", "x"))],
        ["plain-file", "exists and is not a directory"]),
    # ------------------------------------------------------- the other commands
    "validate-misspelt-key": lambda c: (
        ["validate", str(c.write("v.yaml", yaml.safe_dump(c.with_("projection.topk", 3))))],
        ["v.yaml", "'projection.topk'", "did you mean 'top_k'?"]),
    "predict-one-label": lambda c: (c.tool("predict", "--labels", "solo"),
                                    ["--labels 'solo'", "at least two"]),
    "predict-duplicate-labels": lambda c: (c.tool("predict", "--labels", "a,a"),
                                           ["--labels", "'a'", "duplicate"]),
    "predict-batch-size-zero": lambda c: (c.tool("predict", "--batch-size", "0"),
                                          ["batch_size: 0", "must be >= 1"]),
    "predict-out-is-a-directory": lambda c: (
        [*c.tool("predict")[:-6], "--out", str(c.tmp), "--task", "sequence-classification"],
        ["--out", "is a directory", "CSV file"]),
    "predict-max-length-zero": lambda c: (c.tool("predict", "--max-length", "0"),
                                          ["max_length: 0", "allowed: at least 4 input tokens"]),
    "predict-out-under-a-file": lambda c: (
        [*c.tool("predict")[:-6], "--out", str(c.write("plain-file", "x") / "p.csv"),
         "--task", "sequence-classification", "--labels", "negative,positive"],
        ["plain-file", "not a directory"]),
    "project-top-k-zero": lambda c: (c.tool("project", "--top-k", "0"),
                                     ["top_k: 0", "between 1 and"]),
    "project-top-k-above-vocab": lambda c: (c.tool("project", "--top-k", "100000"),
                                            ["top_k: 100000", "vocabulary size"]),
    "usage-not-an-integer": lambda c: (c.tool("project", "--top-k", "five"),
                                       ["promptaudit project", "'--top-k'", "valid integer"]),
    "usage-missing-option": lambda c: (["predict", "--model", str(c.inputs["model"])],
                                       ["promptaudit predict", "Missing option", "--prompt"]),
    "usage-unknown-option": lambda c: (c.run(None, "--bootstrap", "10"),
                                       ["promptaudit run", "No such option: --bootstrap"]),
    "usage-unknown-command": lambda c: (["audit", "x.yaml"], ["No such command 'audit'"]),
    "usage-extra-argument": lambda c: (["gate", "a.json", "b.json"],
                                       ["promptaudit gate", "unexpected extra argument"]),
    "project-unknown-metric": lambda c: (c.tool("project", "--metric", "manhattan"),
                                         ["'manhattan'", "cosine, dot, l2"]),
    "attribute-unknown-method": lambda c: (c.tool("attribute", "--method", "lime"),
                                           ["'lime'", "integrated_gradients"]),
    "attribute-unknown-baseline": lambda c: (c.tool("attribute", "--baseline", "blur"),
                                             ["'blur'", "pad"]),
    "attribute-n-steps-zero": lambda c: (c.tool("attribute", "--n-steps", "0"),
                                         ["n_steps", "0"]),
    "attribute-unknown-target": lambda c: (c.tool("attribute", "--target", "maybe"),
                                           ["'maybe'", "negative, positive"]),
    "attribute-sensitive-column-missing": lambda c: (
        c.tool("attribute", "--sensitive-features", "race"), ["column 'race' not found"]),
    "train-bad-learning-rate": lambda c: (
        ["train", "--model", str(c.inputs["model"]), "--data", str(c.inputs["data"]),
         "--text-column", "sentence", "--label-column", "label", "--out", str(c.out / "adapter"),
         "--learning-rate", "-1"], ["learning_rate", "-1", "> 0"]),
    "train-num-virtual-tokens-zero": lambda c: (
        ["train", "--model", str(c.inputs["model"]), "--data", str(c.inputs["data"]),
         "--text-column", "sentence", "--label-column", "label", "--out", str(c.out / "adapter"),
         "--num-virtual-tokens", "0"], ["num_virtual_tokens", "0", ">= 1"]),
    "gate-result-missing": lambda c: (["gate", str(c.tmp / "none.json")],
                                      ["none.json", "not found"]),
    "gate-result-not-json": lambda c: (["gate", str(c.write("r.json", "{oops"))],
                                       ["r.json", "not valid JSON"]),
    "gate-result-not-a-result": lambda c: (["gate", str(c.write("r.json", '{"a": 1}'))],
                                           ["r.json", "not a promptaudit result", "missing keys"]),
    # ------------------------------- nothing lost, nothing leaked, nothing forged (issue)
    "out-report-over-its-data": _report_over_its_data,
    "out-predict-over-its-data": _predict_over_its_data,
    "out-audit-into-its-adapter": _audit_into_the_adapter,
    "out-inside-symlink-to-model": _out_inside_a_symlink_to_the_model,
    "out-train-over-its-data": _train_out_is_its_data,
    "out-train-is-a-file": _train_out_is_a_file,
    "out-train-into-the-model": _train_out_is_the_model,
    "out-demo-into-its-prompt": _demo_out_into_its_prompt,
    "out-in-audit-training-over-its-data": _in_audit_training_over_its_data,
    "model-typo-local-path": _typo_local_model,
    "data-escape-in-column-name": _escape_in_column_name,
    "data-jsonl-lone-surrogate": _lone_surrogate,
    "data-duplicate-csv-columns": _duplicate_csv_columns,
    "data-jsonl-not-an-object": lambda c: (
        c.run(c.with_("data.path", str(c.write("l.jsonl", '{"sentence": "a"}\n[1, 2]\n')))),
        ["l.jsonl", "line 2 holds a JSON list", "one JSON object"]),
    "yaml-alias-bomb": _alias_bomb,
    "yaml-recursive-alias": _recursive_alias,
    "yaml-spec-too-large": _huge_spec,
    "gate-result-nan-literal": _gate_nan_literal,
    "gate-result-audit-is-a-string": _gate_audit_is_a_string,
    "gate-result-nested-100000-deep": _gate_deep_nesting,
    "attribute-duplicate-sensitive-feature": lambda c: (
        c.tool("attribute", "--sensitive-features", "gender,gender"),
        ["--sensitive-features", "'gender' is listed twice"]),
    "attribute-empty-sensitive-feature": lambda c: (
        c.tool("attribute", "--sensitive-features", "gender,"),
        ["--sensitive-features", "empty column name"]),
    "train-limit-zero": lambda c: ([*_train_args(c, c.out / "adapter"), "--limit", "0"],
                                   ["promptaudit train", "--limit"]),
    # ------------------------------------------- validate checks inputs, not only keys
    "validate-data-missing": lambda c: (
        ["validate", str(c.write("v.yaml", yaml.safe_dump(
            c.with_("data.path", str(c.tmp / "none.csv")))))], ["none.csv", "data file not found"]),
    "validate-column-missing": lambda c: (
        ["validate", str(c.write("v.yaml", yaml.safe_dump(c.with_("data.text_column", "txt"))))],
        ["eval.csv", "column 'txt' not found", "available columns: sentence, label, gender"]),
    "validate-sensitive-column-missing": lambda c: (
        ["validate", str(c.write("v.yaml", yaml.safe_dump(
            c.with_("data.sensitive_features", ["race"]))))], ["column 'race' not found"]),
    "validate-prompt-missing": lambda c: (
        (c.tmp / "adapters").mkdir() or
        ["validate", str(c.write("v.yaml", yaml.safe_dump(
            c.with_("prompt.path", "adapters/nothing-here"))))],
        ["adapters/nothing-here", "prompt not found"]),
    "validate-prompt-unsupported-file": lambda c: (
        ["validate", str(c.write("v.yaml", yaml.safe_dump(
            c.with_("prompt.path", str(c.write("p.txt", "0.1"))))))],
        ["p.txt", "unsupported prompt file type '.txt'"]),
    "validate-data-unsupported-type": lambda c: (
        ["validate", str(c.write("v.yaml", yaml.safe_dump(
            c.with_("data.path", str(c.write("d.xlsx", "x"))))))],
        ["d.xlsx", "unsupported data file type"]),
    "validate-model-missing-dir": lambda c: (
        ["validate", str(c.write("v.yaml", yaml.safe_dump(
            c.with_("model.base", "./models/none"))))], ["models/none", "directory not found"]),
    "validate-term-suite-missing": lambda c: (
        ["validate", str(c.write("v.yaml", yaml.safe_dump(
            c.with_("counterfactuals", {"suite": "terms.json"}))))],
        ["terms.json", "term suite file not found"]),
    "validate-pair-column-missing": lambda c: (
        ["validate", str(c.write("v.yaml", yaml.safe_dump(
            c.with_("counterfactuals", {"pair_column": "pair"}))))],
        ["eval.csv", "column 'pair' not found"]),
}


# --------------------------------- issue 22: declared outputs never overlap an input (4-7)
def _adapter_copy(c: Ctx, name: str = "adapter") -> Path:
    adapter = c.tmp / name
    shutil.copytree(c.request.getfixturevalue("tiny_bert_seqcls_adapter"), adapter)
    return adapter


def _mitigate_args(c: Ctx, out: Path, prompt: Path | None = None) -> list[str]:
    return ["mitigate", "--model", str(c.inputs["model"]),
            "--prompt", str(prompt or _adapter_copy(c)), "--data", str(c.inputs["data"]),
            "--text-column", "sentence", "--label-column", "label", "--out", str(out),
            "--epochs", "1", "--weights", "0"]


def _with_mitigation(c: Ctx, **changes) -> dict:
    spec = c.with_("prompt.path", str(_adapter_copy(c)))
    spec["mitigation"] = {"data": {"path": str(c.inputs["data"]), "text_column": "sentence",
                                   "label_column": "label"}, "weights": [0.0], "epochs": 1}
    for key, value in changes.items():
        spec["mitigation"][key] = value
    return spec


def _bias_csv_over_its_data(c: Ctx):  # data at OUT/bad.bias_audit.csv, a bias audit named bad
    spec = c.with_("data.path", str(c.out / "bad.bias_audit.csv"))
    spec["bias_audit"] = {"categories": ["gender"]}
    return c.run(spec), ["bias_audit report", "bad.bias_audit.csv",
                         "is the data file of this run"]


def _mitigate_out_is_its_prompt(c: Ctx):
    adapter = _adapter_copy(c)
    return _mitigate_args(c, adapter, adapter), ["--out", str(adapter),
                                                 "is the prompt of this run"]


def _mitigate_out_is_its_data(c: Ctx):
    data = c.csv(c.rows(), "train.csv")
    args = _mitigate_args(c, data)
    args[args.index("--data") + 1] = str(data)
    return args, ["--out", "train.csv", "is the data file of this run"]


def _mitigate_out_holds_its_data(c: Ctx):
    folder = c.tmp / "work"
    folder.mkdir()
    data = c.csv(c.rows(), "work/train.csv")
    args = _mitigate_args(c, folder)
    args[args.index("--data") + 1] = str(data)
    return args, ["--out", "contains the data file of this run", "train.csv"]


def _run_mitigation_out_is_its_prompt(c: Ctx):
    spec = _with_mitigation(c)
    spec["mitigation"]["out"] = spec["prompt"]["path"]
    return c.run(spec), ["mitigation.out", "is the prompt of this run"]


def _validate_mitigation_out_is_its_prompt(c: Ctx):
    spec = _with_mitigation(c)
    spec["mitigation"]["out"] = spec["prompt"]["path"]
    return ["validate", str(c.write("v.yaml", yaml.safe_dump(spec))), "--out", str(c.out)], [
        "mitigation.out", "is the prompt of this run"]


def _run_mitigation_data_in_the_reports(c: Ctx):
    spec = _with_mitigation(c)
    spec["mitigation"]["data"]["path"] = str(c.out / "bad.md")
    return c.run(spec), ["markdown report", "bad.md", "is the mitigation data of this run"]


def _run_mitigation_suite_in_the_reports(c: Ctx):
    return c.run(_with_mitigation(c, suite=str(c.out / "bad.html"))), [
        "html report", "is the mitigation term suite of this run"]


def _compare_over_its_before_result(c: Ctx):
    folder = c.tmp / "cmp"
    folder.mkdir()
    fixture = Path(__file__).resolve().parent / "fixtures" / "sample_result.json"
    before = folder / "comparison.json"
    shutil.copy(fixture, before)
    return ["compare", str(before), str(fixture), "--out", str(folder)], [
        "comparison json", "is the before result of this run"]


# ------------------------------------- issue 22: crashes that must be exit 2 (items 9-13)
def _sealed_result(c: Ctx, edit: Callable[[dict], object], *, text_edit=None) -> Path:
    """The sample result edited by ``edit`` and resealed (checksum recomputed)."""
    from promptaudit.result import content_sha256

    fixture = Path(__file__).resolve().parent / "fixtures" / "sample_result.json"
    body = json.loads(fixture.read_text(encoding="utf-8"))
    integrity = body.pop("integrity")
    edit(body)
    try:
        integrity = {**integrity, "content_sha256": content_sha256(body)}
    except ValueError:  # a number no canonical JSON holds: the text edit puts it in
        pass
    body["integrity"] = integrity
    text = json.dumps(body)
    if text_edit is not None:
        text = text_edit(text)
    return c.write("r.json", text)


def _invalid_date(c: Ctx):
    text = yaml.safe_dump(c.spec, sort_keys=False) + "audit_info:\n  date: 2026-02-30\n"
    return c.run(text), ["audit.yaml", "audit_info.date", "'2026-02-30' is not a valid date"]


def _invalid_date_under_an_unknown_key(c: Ctx):
    text = yaml.safe_dump(c.spec, sort_keys=False) + "notes:\n  reviewed: 2026-13-45\n"
    return c.run(text), ["audit.yaml", "unknown key 'notes'"]


def _huge_number(c: Ctx, command: str):
    def edit(body):
        body["task"]["accuracy"] = 0.123456789

    path = _sealed_result(c, edit, text_edit=lambda t: t.replace("0.123456789", "1e309"))
    args = ["gate", str(path)] if command == "gate" else ["compare", str(path), str(path)]
    return args, ["r.json", "task.accuracy", "a number out of range"]


def _huge_integer(c: Ctx):
    def edit(body):
        body["task"]["n_examples"] = 7777777

    path = _sealed_result(c, edit, text_edit=lambda t: t.replace("7777777", "9" * 400))
    return ["gate", str(path)], ["r.json", "task.n_examples", "a number out of range"]


def _signature_not_ascii(c: Ctx):
    from promptaudit.result import SIGNING_KEY_ENV

    c.request.getfixturevalue("monkeypatch").setenv(SIGNING_KEY_ENV, "team-secret")

    def edit(body):
        pass

    path = _sealed_result(c, edit)
    body = json.loads(path.read_text(encoding="utf-8"))
    body["integrity"]["hmac_sha256"] = "\u00e9" * 64
    path.write_text(json.dumps(body), encoding="utf-8")
    return ["gate", str(path)], ["r.json", "integrity.hmac_sha256 signature is wrong"]


def _signing_key_not_utf8(c: Ctx):
    from promptaudit.result import SIGNING_KEY_ENV

    c.request.getfixturevalue("monkeypatch").setenv(SIGNING_KEY_ENV, "key-\udcff")
    return c.run(), [SIGNING_KEY_ENV, "not valid UTF-8"]


def _spec_deleted(c: Ctx):
    return ["gate", str(_sealed_result(c, lambda b: b["audit"].pop("spec")))], [
        "r.json", "'spec' is a required property"]


def _spec_null(c: Ctx):
    return ["gate", str(_sealed_result(c, lambda b: b["audit"].update(spec=None)))], [
        "r.json", "audit.spec", "None is not of type 'object'"]


def _spec_gates_renamed(c: Ctx):  # "gates" with a Cyrillic e
    def edit(body):
        spec = body["audit"]["spec"]
        spec["gat\u0435s"] = spec.pop("gates")

    return ["gate", str(_sealed_result(c, edit))], [
        "r.json", "audit.spec.gates is missing", "never passes with 0 gates checked"]


def _spec_gates_emptied(c: Ctx):
    return ["gate", str(_sealed_result(c, lambda b: b["audit"]["spec"].update(gates=[])))], [
        "r.json", "audit.spec.gates is empty"]


# ------------------------------------------------ issue 22: smaller data items
def _jsonl_text_is(c: Ctx, value):
    lines = [json.dumps({"sentence": "fine", "label": "positive", "gender": "male"}),
             json.dumps({"sentence": value, "label": "negative", "gender": "female"})]
    path = c.write("o.jsonl", "\n".join(lines) + "\n")
    kind = "object" if isinstance(value, dict) else "list"
    return c.run(c.with_("data.path", str(path))), [
        "o.jsonl", "column 'sentence'", "line 2", f"holds a JSON {kind}"]


def _train_labels_one_and_two(c: Ctx):
    rows = [{**row, "label": 1 + i % 2} for i, row in enumerate(c.rows())]
    data = c.csv(rows, "onetwo.csv")
    return _train_args(c, c.tmp / "adapter", data), [
        "onetwo.csv", "column 'label'", "integer labels 1,2 without 0", "--labels 1,2"]


CASES.update({
    "run-bias-audit-csv-over-its-data": _bias_csv_over_its_data,
    "mitigate-out-is-its-prompt": _mitigate_out_is_its_prompt,
    "mitigate-out-is-its-data": _mitigate_out_is_its_data,
    "mitigate-out-holds-its-data": _mitigate_out_holds_its_data,
    "run-mitigation-out-is-its-prompt": _run_mitigation_out_is_its_prompt,
    "validate-mitigation-out-is-its-prompt": _validate_mitigation_out_is_its_prompt,
    "run-mitigation-data-in-the-reports": _run_mitigation_data_in_the_reports,
    "run-mitigation-suite-in-the-reports": _run_mitigation_suite_in_the_reports,
    "compare-out-over-its-before-result": _compare_over_its_before_result,
    "spec-invalid-date": _invalid_date,
    "spec-invalid-date-under-an-unknown-key": _invalid_date_under_an_unknown_key,
    "gate-result-number-out-of-range": lambda c: _huge_number(c, "gate"),
    "compare-result-number-out-of-range": lambda c: _huge_number(c, "compare"),
    "gate-result-integer-out-of-range": _huge_integer,
    "gate-result-signature-not-ascii": _signature_not_ascii,
    "run-signing-key-not-utf8": _signing_key_not_utf8,
    "gate-result-spec-deleted": _spec_deleted,
    "gate-result-spec-null": _spec_null,
    "gate-result-spec-gates-renamed": _spec_gates_renamed,
    "gate-result-spec-gates-emptied": _spec_gates_emptied,
    "jsonl-text-is-an-object": lambda c: _jsonl_text_is(c, {"a": 1}),
    "jsonl-text-is-a-list": lambda c: _jsonl_text_is(c, ["a", "b"]),
    "train-labels-one-and-two": _train_labels_one_and_two,
})


def _two_tensors(c: Ctx) -> Path:
    path = c.tmp / "two.safetensors"
    save_file({"a": torch.zeros(4, 32), "b": torch.zeros(4, 32)}, str(path))
    return path


def assert_clean_error(result, fragments: list[str]) -> str:
    """Exit 2; stderr ends with exactly one ``error:`` line (warnings and the stage progress
    lines of the stages already started may precede); no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no message on stderr"
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert all(line.startswith(("WARNING: ", "promptaudit [")) for line in lines[:-1]), (
        result.stderr)
    assert "Traceback" not in result.output and "internal error" not in errors[0]
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, runner, inputs, tmp_path,
                                                            request):
    out = tmp_path / "reports"
    out.mkdir()
    for name, content in PREVIOUS.items():
        (out / name).write_bytes(content)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ctx = Ctx(inputs=inputs, tmp=scratch, out=out, request=request, spec=base_spec(inputs))
    args, fragments = CASES[case](ctx)
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert_clean_error(result, fragments)
    assert _snapshot(out) == PREVIOUS  # nothing new, nothing changed, no temp files left


def test_the_valid_spec_runs(runner, inputs, tmp_path, request):
    """The cases above fail for their own reason: the spec they start from is fine."""
    ctx = Ctx(inputs=inputs, tmp=tmp_path, out=tmp_path / "reports", request=request,
              spec=base_spec(inputs))
    result = runner.invoke(app, ctx.run(), catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "bad.html", "bad.json", "bad.junit.xml", "bad.md"]


def test_case_count():
    assert len(CASES) >= 45


def test_adapter_for_another_base_model_with_the_same_shapes_warns(runner, inputs, tmp_path,
                                                                   request):
    """Same hidden size and head: audit it as asked, but warn that it was trained elsewhere."""
    adapter = tmp_path / "adapter"
    shutil.copytree(request.getfixturevalue("tiny_bert_seqcls_adapter"), adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "vendor/other-bert"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    ctx = Ctx(inputs=inputs, tmp=tmp_path, out=tmp_path / "reports", request=request,
              spec=base_spec(inputs))
    result = runner.invoke(app, ctx.run(ctx.with_("prompt.path", str(adapter))),
                           catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    assert "was trained on base model vendor/other-bert" in result.stderr
    assert f"auditing it on {inputs['model']}" in result.stderr


# ------------------------------------------------------ what must keep working (issues)
def test_yaml_exponent_floats_are_numbers(runner, inputs, tmp_path, request):
    """`3e-2` is a number in YAML 1.2 (PyYAML's 1.1 rule read it as a string)."""
    ctx = Ctx(inputs=inputs, tmp=tmp_path, out=tmp_path / "reports", request=request,
              spec=base_spec(inputs))
    spec = ctx.with_("fairness.confidence", 0.5)
    text = yaml.safe_dump(spec, sort_keys=False).replace("confidence: 0.5", "confidence: 5e-1")
    path = ctx.write("floats.yaml", text)
    outcome = runner.invoke(app, ["validate", str(path), "--set", "fairness.confidence=9e-1"],
                            catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    from promptaudit.spec import load_spec

    assert load_spec(path).fairness.confidence == 0.5
    assert load_spec(path, ["fairness.confidence=9e-1"]).fairness.confidence == 0.9
    train = ctx.with_("prompt", {"train": {"data": {"path": str(inputs["data"]),
                                                    "text_column": "sentence",
                                                    "label_column": "label"},
                                           "learning_rate": 0.5}})
    text = yaml.safe_dump(train, sort_keys=False).replace("learning_rate: 0.5",
                                                          "learning_rate: 3e-2")
    assert load_spec(ctx.write("lr.yaml", text)).prompt.train.learning_rate == 0.03


def test_validate_code_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, promptaudit.spec, promptaudit.paths, promptaudit.data; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_limit_small_validation_special_tokens_once_and_shared_permissions(
        runner, inputs, tmp_path):
    import os
    import stat

    out = tmp_path / "adapter"
    outcome = runner.invoke(app, [
        "train", "--model", str(inputs["model"]), "--data", str(inputs["data"]),
        "--text-column", "sentence", "--label-column", "label", "--out", str(out),
        "--epochs", "1", "--limit", "10", "--num-virtual-tokens", "3", "--init-text", "the film"],
        catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.count("special tokens into the prompt") == 1  # said once, not twice
    info = json.loads((out / "training_info.json").read_text())
    assert (info["n_train"], info["n_validation"]) == (9, 1)  # --limit 10, 10% held out
    assert "validation set has only 1 example" in outcome.stderr
    assert "on 1 example" in outcome.stdout
    mask = os.umask(0)
    os.umask(mask)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == 0o666 & ~mask, (name, oct(mode))
