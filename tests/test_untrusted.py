"""Untrusted artifacts: nothing a vendor's file or a client's data holds is ever executed.

* A pickle whose ``__reduce__`` would create a marker file, planted as an adapter's
  ``adapter_model.bin``, as a ``.pt`` prompt, as a model's ``pytorch_model.bin`` and as a
  training checkpoint's ``optimizer.pt``: the marker never appears and the CLI exits 2.
* YAML python tags (in the spec, in ``--set`` and in a term-suite file) are refused by
  ``safe_load``: nothing runs, exit 2.
* ``trust_remote_code`` is never passed to transformers unless the spec asks for it, and
  a model folder with custom code is refused without running it.
* Every user string (data texts, group names, a sensitive column's name, label names, the
  prompt path) is escaped in the HTML, JUnit XML and Markdown reports: script,
  attribute-breaking and Markdown-injection payloads never become markup.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from promptaudit.cli import app


class _PlantMarker:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for arbitrary code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_exit_2(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    # warnings and the progress lines of the stages already started may precede the error
    assert all(line.startswith(("WARNING: ", "promptaudit [")) for line in lines[:-1]), (
        result.stderr)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def eval_csv(tmp_path_factory, sentences) -> Path:
    path = tmp_path_factory.mktemp("untrusted-data") / "eval.csv"
    pd.DataFrame({"sentence": sentences * 2, "label": [0, 1] * len(sentences),
                  "gender": ["f", "f", "m", "m"] * (len(sentences) // 2)}).to_csv(path, index=False)
    return path


def _spec(tmp_path: Path, model: Path, prompt: Path, data: Path, **extra) -> Path:
    spec = {
        "name": "untrusted", "model": {"base": str(model), "task": "sequence-classification",
                                       "allow_untrained_head": True,
                                       "labels": ["no", "yes"], "max_length": 16},
        "prompt": {"path": str(prompt)},
        "data": {"path": str(data), "text_column": "sentence", "label_column": "label",
                 "sensitive_features": ["gender"]},
        "projection": {"top_k": 2, "fidelity": False},
        "attribution": {"n_steps": 2, "max_examples": 2},
        "fairness": {"bootstrap": 0, "min_group_size": 2},
        "baselines": {"projected": False, "init_text": False},
        **extra,
    }
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


# -------------------------------------------------------------- malicious pickles
@pytest.fixture
def evil_adapter(tmp_path, tiny_bert_seqcls_adapter) -> tuple[Path, Path]:
    """A genuine prompt-tuning adapter whose weights were swapped for a malicious .bin."""
    adapter = tmp_path / "vendor-adapter"
    adapter.mkdir()
    shutil.copy(tiny_bert_seqcls_adapter / "adapter_config.json", adapter)
    marker = tmp_path / "pwned-by-adapter"
    torch.save({"prompt_embeddings": _PlantMarker(str(marker))}, adapter / "adapter_model.bin")
    return adapter, marker


def test_malicious_adapter_bin_is_not_executed_by_run(runner, evil_adapter, tiny_bert_dir,
                                                      eval_csv, tmp_path):
    adapter, marker = evil_adapter
    out = tmp_path / "reports"
    result = invoke(runner, "run", _spec(tmp_path, tiny_bert_dir, adapter, eval_csv), "--out", out)
    assert_exit_2(result, "adapter_model.bin", "not plain tensors")
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", ["predict", "project", "attribute"])
def test_malicious_adapter_bin_is_not_executed_by_any_command(command, runner, evil_adapter,
                                                              tiny_bert_dir, eval_csv):
    adapter, marker = evil_adapter
    data = [] if command == "project" else ["--data", eval_csv, "--text-column", "sentence"]
    result = invoke(runner, command, "--model", tiny_bert_dir, "--prompt", adapter, *data)
    assert_exit_2(result, "adapter_model.bin", "not plain tensors")
    assert not marker.exists()


def test_malicious_pt_prompt_is_not_executed(runner, malicious_pt, tiny_bert_dir, eval_csv,
                                             tmp_path):
    path, marker = malicious_pt
    result = invoke(runner, "run", _spec(tmp_path, tiny_bert_dir, path, eval_csv),
                    "--out", tmp_path / "reports")
    assert_exit_2(result, str(path), "not plain tensors")
    assert not marker.exists()


def test_malicious_model_weights_are_not_executed(runner, tiny_bert_dir, eval_csv, tmp_path):
    model = tmp_path / "vendor-model"
    shutil.copytree(tiny_bert_dir, model)
    (model / "model.safetensors").unlink()
    marker = tmp_path / "pwned-by-model"
    torch.save({"bert.embeddings.word_embeddings.weight": _PlantMarker(str(marker))},
               model / "pytorch_model.bin")
    prompt = tmp_path / "p.safetensors"
    save_file({"p": torch.zeros(2, 32)}, str(prompt))
    result = invoke(runner, "predict", "--model", model, "--prompt", prompt, "--data", eval_csv,
                    "--text-column", "sentence", "--task", "sequence-classification")
    assert_exit_2(result, "vendor-model", "not plain tensors")
    assert not marker.exists()


def test_malicious_training_checkpoint_is_not_executed(runner, tiny_bert_dir, tmp_path,
                                                       sentences):
    data = tmp_path / "train.csv"
    pd.DataFrame({"sentence": sentences, "label": ["a", "b"] * 4}).to_csv(data, index=False)
    out = tmp_path / "adapter"
    args = ["train", "--model", tiny_bert_dir, "--data", data, "--text-column", "sentence",
            "--label-column", "label", "--out", out, "--num-virtual-tokens", "2",
            "--init", "random", "--batch-size", "8"]
    assert invoke(runner, *args, "--epochs", "1").exit_code == 0
    checkpoint = out / ".checkpoints" / "epoch-0001"
    marker = tmp_path / "pwned-by-checkpoint"
    torch.save({"state": _PlantMarker(str(marker))}, checkpoint / "optimizer.pt")
    result = invoke(runner, *args, "--epochs", "2", "--resume")
    assert_exit_2(result, "optimizer.pt", "not plain tensors")
    assert not marker.exists()


# -------------------------------------------------------------------- YAML tags
def test_python_tag_in_spec_is_refused(runner, tmp_path):
    marker = tmp_path / "pwned-by-yaml"
    spec = tmp_path / "audit.yaml"
    spec.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n'
                    "prompt: {path: p.pt}\ndata: {path: d.csv}\n", encoding="utf-8")
    for command in ("run", "validate"):
        result = invoke(runner, command, spec)
        assert_exit_2(result, "audit.yaml", "python/object/apply:os.system")
    assert not marker.exists()


def test_python_tag_in_set_is_not_executed(runner, tmp_path):
    marker = tmp_path / "pwned-by-set"
    spec = tmp_path / "audit.yaml"
    spec.write_text("name: ok\nprompt: {path: p.pt}\ndata: {path: d.csv}\n", encoding="utf-8")
    result = invoke(runner, "validate", spec, "--set",
                    f'name=!!python/object/apply:os.system ["touch {marker}"]')
    assert_exit_2(result, "name")
    assert not marker.exists()


def test_python_tag_in_term_suite_is_refused(runner, tiny_bert_dir, eval_csv, tmp_path):
    marker = tmp_path / "pwned-by-suite"
    suite = tmp_path / "terms.yaml"
    suite.write_text(f'features: !!python/object/apply:os.system ["touch {marker}"]\n',
                     encoding="utf-8")
    prompt = tmp_path / "p.safetensors"
    save_file({"p": torch.zeros(2, 32)}, str(prompt))
    spec = _spec(tmp_path, tiny_bert_dir, prompt, eval_csv,
                 counterfactuals={"suite": str(suite)})
    result = invoke(runner, "run", spec, "--out", tmp_path / "reports")
    assert_exit_2(result, "terms.yaml")
    assert not marker.exists()


# ------------------------------------------------------------- trust_remote_code
def test_trust_remote_code_is_never_passed(runner, monkeypatch, tiny_bert_dir, eval_csv, tmp_path):
    import transformers

    calls: list[tuple[str, dict]] = []

    def recording(cls_name: str, original):
        def from_pretrained(*args, **kwargs):
            calls.append((cls_name, dict(kwargs)))
            return original(*args, **kwargs)
        return from_pretrained

    for name in ("AutoTokenizer", "AutoConfig", "AutoModelForSequenceClassification",
                 "AutoModelForCausalLM", "AutoModelForMaskedLM"):
        cls = getattr(transformers, name)
        monkeypatch.setattr(cls, "from_pretrained", recording(name, cls.from_pretrained))
    prompt = tmp_path / "p.safetensors"
    save_file({"p": torch.randn(2, 32)}, str(prompt))
    result = invoke(runner, "run", _spec(tmp_path, tiny_bert_dir, prompt, eval_csv),
                    "--out", tmp_path / "reports")
    assert result.exit_code in (0, 1), result.output
    result = invoke(runner, "predict", "--model", tiny_bert_dir, "--prompt", prompt,
                    "--data", eval_csv, "--text-column", "sentence", "--task", "masked-lm",
                    "--labels", "good,bad")
    assert result.exit_code == 0, result.output
    loaded = {name for name, _ in calls}
    assert {"AutoTokenizer", "AutoModelForSequenceClassification", "AutoModelForMaskedLM"} <= loaded
    assert not [c for c in calls if c[1].get("trust_remote_code")], calls


def test_model_with_custom_code_is_refused_without_running_it(runner, tiny_bert_dir, eval_csv,
                                                              tmp_path):
    model = tmp_path / "vendor-model"
    shutil.copytree(tiny_bert_dir, model)
    marker = tmp_path / "pwned-by-remote-code"
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="vendorbert", auto_map={
        "AutoConfig": "vendor.VendorConfig",
        "AutoModelForSequenceClassification": "vendor.VendorModel"})
    (model / "config.json").write_text(json.dumps(config))
    (model / "vendor.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import BertConfig, BertForSequenceClassification\n"
        "class VendorConfig(BertConfig):\n    model_type = 'vendorbert'\n"
        "class VendorModel(BertForSequenceClassification):\n    config_class = VendorConfig\n")
    prompt = tmp_path / "p.safetensors"
    save_file({"p": torch.zeros(2, 32)}, str(prompt))
    result = invoke(runner, "predict", "--model", model, "--prompt", prompt, "--data", eval_csv,
                    "--text-column", "sentence", "--task", "sequence-classification")
    assert_exit_2(result, "vendor-model", "custom code")
    assert not marker.exists()


# ------------------------------------------------------------- escaping in reports
SCRIPT = "<script>alert('xss')</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
MD_LINK = "[x](javascript:alert(1))"
MD_TABLE = "| col |"
BOLD = "<b>pwn</b>"


class _Markup(HTMLParser):
    """Collects what a browser would treat as markup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.bold_texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "b":
            self.bold_texts.append(data)


def assert_no_injected_markup(html: str) -> _Markup:
    parser = _Markup()
    parser.feed(html)
    for tag, attrs in parser.tags:
        assert tag != "script", "a <script> element"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"event handler {name}={value!r} on <{tag}>"
            assert not str(value or "").strip().lower().startswith("javascript:"), (tag, attrs)
        if tag == "img":
            assert str(attrs.get("src", "")).startswith("data:image/"), attrs
    assert "pwn" not in parser.bold_texts
    return parser


@pytest.fixture(scope="module")
def payload_reports(tmp_path_factory, tiny_bert_dir) -> dict[str, str]:
    """Run an audit whose every user string is a payload; return the four report texts."""
    folder = tmp_path_factory.mktemp("payloads")
    feature = f"grp{ATTRIBUTE}"
    groups = [f"{BOLD}{SCRIPT}", f"{MD_TABLE} {MD_LINK}"]
    texts = [f"the movie was good {SCRIPT}", f"a boring film {ATTRIBUTE}",
             f"fun {MD_LINK} {MD_TABLE}", f"ok {BOLD}"]
    rows = [{"sentence": texts[i % 4], "label": i % 2, feature: groups[(i // 2) % 2]}
            for i in range(16)]
    data = folder / "eval.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    prompt_dir = folder / f"vendor{ATTRIBUTE}{MD_TABLE}"
    prompt_dir.mkdir()
    prompt = prompt_dir / "prompt.safetensors"
    save_file({"p": torch.randn(3, 32, generator=torch.Generator().manual_seed(1))}, str(prompt))
    labels = [f"no{SCRIPT}", f"yes{MD_LINK}{BOLD}"]
    spec = {
        "name": "payloads",
        "model": {"base": str(tiny_bert_dir), "task": "sequence-classification",
                  "allow_untrained_head": True,  # a bare prompt on the head-less tiny BERT
                  "labels": labels, "positive_label": labels[1], "max_length": 24},
        "prompt": {"path": str(prompt)},
        "data": {"path": str(data), "text_column": "sentence", "label_column": "label",
                 "sensitive_features": [feature]},
        "projection": {"top_k": 2, "fidelity": False},
        "attribution": {"n_steps": 2, "max_examples": 4},
        "fairness": {"bootstrap": 0, "min_group_size": 2},
        "baselines": {"projected": False, "init_text": False},
        "gates": [{"metric": "demographic_parity_difference", "max": 0.0, "feature": feature},
                  {"metric": "demographic_parity_ratio", "min": 0.0, "feature": feature}],
    }
    audit = folder / "audit.yaml"
    audit.write_text(yaml.safe_dump(spec), encoding="utf-8")
    out = folder / "reports"
    result = CliRunner().invoke(app, ["run", str(audit), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    reports = {kind: (out / f"payloads{suffix}").read_text(encoding="utf-8") for kind, suffix in
               (("html", ".html"), ("json", ".json"), ("junit", ".junit.xml"), ("md", ".md"))}
    reports["prompt"] = str(prompt)
    reports["feature"] = feature
    return reports


def test_payloads_reach_the_result(payload_reports):
    """The escaping tests below are not vacuous: the payloads are in the result."""
    result = json.loads(payload_reports["json"])
    assert payload_reports["feature"] in result["fairness"]["by_feature"]
    groups = result["fairness"]["by_feature"][payload_reports["feature"]]["by_group"]
    assert f"{BOLD}{SCRIPT}" in groups and f"{MD_TABLE} {MD_LINK}" in groups
    assert result["task"]["labels"][0] == f"no{SCRIPT}"
    assert result["provenance"]["prompt"]["source"] == payload_reports["prompt"]
    assert any(SCRIPT in example["text"] for example in result["attribution"]["examples"])


def test_html_report_escapes_every_user_string(payload_reports):
    html = payload_reports["html"]
    for payload in (SCRIPT, ATTRIBUTE, BOLD, "<img src=x"):
        assert payload not in html
    assert_no_injected_markup(html)
    # ... and the strings are shown, escaped, rather than dropped
    assert "&lt;script&gt;alert(" in html
    assert "&lt;b&gt;pwn&lt;/b&gt;" in html
    assert "grp&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "no&lt;script&gt;" in html


def test_junit_report_escapes_every_user_string(payload_reports):
    xml = payload_reports["junit"]
    root = ET.fromstring(xml)  # well-formed despite the payloads
    allowed = {"testsuites", "testsuite", "properties", "property", "testcase", "failure",
               "system-out", "system-err", "skipped", "error"}
    assert {element.tag for element in root.iter()} <= allowed
    for payload in (SCRIPT, ATTRIBUTE, BOLD):
        assert payload not in xml
    properties = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert properties["prompt"] == payload_reports["prompt"]  # round-trips as plain text
    names = [case.get("name") for case in root.iter("testcase")]
    assert len(names) == 2 and all(payload_reports["feature"] in name for name in names)


def test_markdown_report_escapes_every_user_string(payload_reports):
    from markdown_it import MarkdownIt

    md = payload_reports["md"]
    for payload in (SCRIPT, BOLD, "<img", MD_LINK, MD_TABLE):
        assert payload not in md
    rendered = MarkdownIt("commonmark").enable("table").render(md)  # raw HTML allowed, as on GitHub
    parser = assert_no_injected_markup(rendered)
    assert not [attrs for tag, attrs in parser.tags if tag == "a"], "a link was injected"
    # a '|' in a user string must not add table cells
    for table in rendered.split("<table>")[1:]:
        body = table.split("</table>")[0]
        widths = {row.count("<td") + row.count("<th") for row in body.split("<tr>")[1:]}
        assert len(widths) == 1, body
    assert "grp&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in rendered  # shown as text


# ------------------------------------------- no network, no leaked key, no forged verdict
SIGNING_KEY = "ci-secret-7f3a9Qx"


@pytest.fixture(scope="module")
def offline_signed_audit(tmp_path_factory, tiny_bert_seqcls_adapter, tiny_bert_dir, eval_csv):
    """A real local audit run with every socket refused and a signing key set."""
    import socket

    tmp_path = tmp_path_factory.mktemp("offline-signed")
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network refused by the test")

    patch = pytest.MonkeyPatch()
    patch.setattr(socket.socket, "connect", refuse)
    patch.setattr(socket.socket, "connect_ex", refuse)
    patch.setattr(socket, "getaddrinfo", refuse)
    patch.setattr(socket, "create_connection", refuse)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        patch.delenv(name, raising=False)
    patch.setenv("PROMPTAUDIT_SIGNING_KEY", SIGNING_KEY)
    out = tmp_path / "reports"
    try:
        outcome = CliRunner().invoke(
            app,
            ["run", str(_spec(tmp_path, tiny_bert_dir, tiny_bert_seqcls_adapter, eval_csv,
                              # defined when the tiny model selects nobody (a ratio: 0/0)
                              gates=[{"metric": "demographic_parity_difference", "max": 1.0}])),
             "--out", str(out), "--verbose"],
            catch_exceptions=False,
        )
    finally:
        patch.undo()
    return {"outcome": outcome, "out": out, "attempts": attempts}


def test_a_local_audit_opens_no_socket(offline_signed_audit):
    outcome = offline_signed_audit["outcome"]
    assert outcome.exit_code == 0, outcome.output
    assert offline_signed_audit["attempts"] == []


def test_the_signing_key_reaches_no_file_log_or_report(offline_signed_audit):
    out = offline_signed_audit["out"]
    result = json.loads((out / "untrusted.json").read_text())
    assert len(result["integrity"]["hmac_sha256"]) == 64
    assert SIGNING_KEY not in offline_signed_audit["outcome"].output
    for path in out.rglob("*"):
        if path.is_file():
            assert SIGNING_KEY.encode() not in path.read_bytes(), path


def test_gate_with_the_key_accepts_the_signed_result_and_refuses_a_rehashed_edit(
        runner, offline_signed_audit, tmp_path, monkeypatch):
    from promptaudit.result import content_sha256

    path = offline_signed_audit["out"] / "untrusted.json"
    monkeypatch.setenv("PROMPTAUDIT_SIGNING_KEY", SIGNING_KEY)
    assert invoke(runner, "gate", path).exit_code == 0
    forged = json.loads(path.read_text())
    forged["audit"]["spec"]["gates"][0]["max"] = 0.05  # a stricter gate, "met" by hand
    forged["fairness"]["disparities"]["demographic_parity_difference"] = 0.01
    assert forged != json.loads(path.read_text())
    body = {k: v for k, v in forged.items() if k != "integrity"}
    forged["integrity"]["content_sha256"] = content_sha256(body)  # the checksum is public
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    assert_exit_2(invoke(runner, "gate", tmp_path / "forged.json"), "signature is wrong")
    monkeypatch.delenv("PROMPTAUDIT_SIGNING_KEY")
    outcome = invoke(runner, "gate", tmp_path / "forged.json")
    assert outcome.exit_code == 0 and "signature not checked" in outcome.stdout


# -------------------------------------------------------- terminal escape injection
def test_control_characters_from_an_adapter_config_are_escaped_on_the_console(
        runner, tiny_bert_seqcls_adapter, tiny_bert_dir, eval_csv, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_bert_seqcls_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "vendor/\x1b[31mred\x1b]0;title\x07\u202eevil"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    outcome = invoke(runner, "predict", "--model", tiny_bert_dir, "--prompt", adapter,
                     "--data", eval_csv, "--text-column", "sentence", "--labels", "no,yes",
                     "--out", tmp_path / "p.csv")
    assert outcome.exit_code == 0, outcome.output
    assert "trained on base model vendor/" in outcome.stderr  # the warning is shown ...
    assert "\\x1b[31mred\\x1b]0;title\\x07\\u202eevil" in outcome.stderr  # ... escaped
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in outcome.output
