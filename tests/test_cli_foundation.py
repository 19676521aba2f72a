"""`promptaudit predict` and `promptaudit train`: values, exit codes, one-line errors."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from promptaudit.cli import app

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def sentences_csv(tmp_path_factory, sentences):
    path = tmp_path_factory.mktemp("cli-data") / "eval.csv"
    pd.DataFrame({"sentence": sentences, "group": ["x", "y"] * (len(sentences) // 2)}).to_csv(
        path, index=False)
    return path


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_clean_error(result, *fragments: str) -> None:
    """Exit 2, one ``error:`` line closing stderr (logged warnings may precede it), no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert all(line.startswith("WARNING: ") for line in lines[:-1]), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


# -------------------------------------------------------------------- predict
def test_predict_seqcls_adapter_on_minilm_matches_peft(runner, minilm_seqcls_adapter,
                                                       sentences_csv, sentences, tmp_path,
                                                       minilm_seqcls_reference):
    out = tmp_path / "pred.csv"
    result = invoke(runner, "predict", "--model", "builtin:minilm",
                    "--prompt", minilm_seqcls_adapter, "--data", sentences_csv,
                    "--text-column", "sentence", "--labels", "negative,positive", "--out", out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["sentence", "p_negative", "p_positive", "prediction"]
    assert table["sentence"].tolist() == sentences
    probs = table[["p_negative", "p_positive"]].to_numpy()
    assert np.abs(probs - minilm_seqcls_reference).max() <= TOLERANCE
    expected = np.array(["negative", "positive"])[minilm_seqcls_reference.argmax(axis=1)]
    assert table["prediction"].tolist() == expected.tolist()


def test_predict_causal_adapter_on_tiny_gpt2_matches_peft(runner, tiny_gpt2_dir,
                                                          tiny_gpt2_causal_adapter,
                                                          sentences_csv, gpt2_causal_reference):
    # no --out: the CSV goes to stdout; the task comes from the adapter
    result = invoke(runner, "predict", "--model", tiny_gpt2_dir,
                    "--prompt", tiny_gpt2_causal_adapter, "--data", sentences_csv,
                    "--text-column", "sentence", "--labels", "good,bad", "--batch-size", "3")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    probs = table[["p_good", "p_bad"]].to_numpy()
    assert np.abs(probs - gpt2_causal_reference).max() <= TOLERANCE


def test_predict_labels_default_to_the_head(runner, tiny_bert_dir, tiny_bert_seqcls_adapter,
                                            sentences_csv, tmp_path):
    out = tmp_path / "p.csv"
    result = invoke(runner, "predict", "-m", tiny_bert_dir, "-p", tiny_bert_seqcls_adapter,
                    "-d", sentences_csv, "--text-column", "sentence", "--out", out)
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out).columns) == ["sentence", "p_LABEL_0", "p_LABEL_1", "prediction"]
    assert f"wrote 8 predictions to {out}" in result.stderr


def test_predict_masked_lm_tensor_file(runner, tiny_bert_dir, sentences_csv, tmp_path):
    prompt = tmp_path / "p.pt"
    torch.save(torch.randn(3, 32), prompt)
    result = invoke(runner, "predict", "-m", tiny_bert_dir, "-p", prompt, "-d", sentences_csv,
                    "--text-column", "sentence", "--task", "masked-lm", "--labels", "good,bad")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    np.testing.assert_allclose(table["p_good"] + table["p_bad"], 1.0, atol=1e-6)


def test_predict_model_override_warns_on_stderr(runner, tiny_bert_dir, tiny_bert_seqcls_adapter,
                                                sentences_csv, tmp_path):
    moved = tmp_path / "adapter"
    shutil.copytree(tiny_bert_seqcls_adapter, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "some-org/some-other-model"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    result = invoke(runner, "predict", "-m", tiny_bert_dir, "-p", moved, "-d", sentences_csv,
                    "--text-column", "sentence", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "was trained on base model some-org/some-other-model" in result.stderr


# ---------------------------------------------------------- bad prompt inputs
def _bad_prompt(kind: str, tmp_path, request):
    if kind == "prefix":
        return request.getfixturevalue("tiny_bert_prefix_adapter"), ["PREFIX_TUNING"]
    if kind == "lora":
        return request.getfixturevalue("tiny_bert_lora_adapter"), ["'LORA' is not a soft prompt"]
    if kind == "missing":
        return tmp_path / "missing.safetensors", ["missing.safetensors", "prompt not found"]
    path = tmp_path / ("bad.pt" if kind == "pickle" else "bad.safetensors")
    if kind == "pickle":
        path, _ = request.getfixturevalue("malicious_pt")
        return path, [str(path), "not plain tensors"]
    if kind in ("config-rows", "config-width"):  # config contradicts its weights
        import json
        import shutil

        adapter = tmp_path / "contradicting"
        shutil.copytree(request.getfixturevalue("tiny_bert_seqcls_adapter"), adapter)
        config = json.loads((adapter / "adapter_config.json").read_text())
        field, value, actual = (("num_virtual_tokens", 20, "4 rows") if kind == "config-rows"
                                else ("token_dim", 768, "32 columns"))
        config[field] = value
        (adapter / "adapter_config.json").write_text(json.dumps(config))
        return adapter, [str(adapter / "adapter_config.json"), f"{field} is {value}", actual]
    if kind == "adapter-hidden":  # a MiniLM adapter (384 wide) on the 32-wide BERT
        adapter = request.getfixturevalue("minilm_seqcls_adapter")
        return adapter, [str(adapter), "hidden size 384 does not match the model's hidden size 32"]
    tensor = {
        "rank": torch.zeros(1, 3, 32),
        "hidden": torch.zeros(3, 16),
        "nan": torch.full((3, 32), float("nan")),
        "inf": torch.tensor([[0.0] * 31 + [float("-inf")]]),
    }[kind]
    save_file({"p": tensor}, str(path))
    fragment = {"rank": "expected 2 dimensions", "hidden": "hidden size 16 does not match",
                "nan": "NaN or inf", "inf": "NaN or inf"}[kind]
    return path, [str(path), fragment]


@pytest.mark.parametrize("kind", ["rank", "hidden", "adapter-hidden", "nan", "inf", "missing",
                                  "prefix", "lora", "pickle", "config-rows", "config-width"])
def test_predict_bad_prompt_exits_2_with_one_line(runner, tiny_bert_dir, sentences_csv, tmp_path,
                                                  request, kind):
    prompt, fragments = _bad_prompt(kind, tmp_path, request)
    result = invoke(runner, "predict", "-m", tiny_bert_dir, "-p", prompt, "-d", sentences_csv,
                    "--text-column", "sentence", "--task", "sequence-classification",
                    "--labels", "a,b")
    assert_clean_error(result, *fragments)
    assert not (tmp_path / "pwned-marker").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--text-column", "text"], ["column 'text' not found", "sentence, group"]),
        (["--text-column", "sentence", "--labels", "solo"], ["--labels 'solo'"]),
        (["--text-column", "sentence", "--task", "translation"], ["unknown task 'translation'"]),
        (["--text-column", "sentence", "--device", "tpu"], ["device 'tpu'"]),
    ],
)
def test_predict_bad_usage_exits_2(runner, tiny_bert_dir, tiny_bert_seqcls_adapter,
                                   sentences_csv, args, fragments):
    result = invoke(runner, "predict", "-m", tiny_bert_dir, "-p", tiny_bert_seqcls_adapter,
                    "-d", sentences_csv, *args)
    assert_clean_error(result, *fragments)


def test_predict_missing_model_and_data(runner, tiny_bert_seqcls_adapter, sentences_csv, tmp_path):
    result = invoke(runner, "predict", "-m", tmp_path / "nomodel", "-p", tiny_bert_seqcls_adapter,
                    "-d", sentences_csv, "--text-column", "sentence")
    assert_clean_error(result, "nomodel", "directory not found")
    result = invoke(runner, "predict", "-m", "builtin:minilm", "-p", tiny_bert_seqcls_adapter,
                    "-d", tmp_path / "none.csv", "--text-column", "sentence")
    assert_clean_error(result, "none.csv", "data file not found")


# ---------------------------------------------------------------------- train
@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    positive, negative = ["good", "great", "fun", "loved"], ["bad", "awful", "boring", "hated"]
    rows = []
    for i in range(24):
        word = (positive if i % 2 else negative)[i % 4]
        rows.append({"sentence": f"the movie was really {word}",
                     "label": "positive" if i % 2 else "negative"})
    path = tmp_path_factory.mktemp("cli-train") / "train.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_train_end_to_end_then_predict(runner, tiny_bert_dir, train_csv, tmp_path, peft_probs,
                                       sentences, sentences_csv):
    out = tmp_path / "adapter"
    result = invoke(runner, "train", "--model", tiny_bert_dir, "--data", train_csv,
                    "--text-column", "sentence", "--label-column", "label", "--out", out,
                    "--num-virtual-tokens", "4", "--epochs", "2", "--batch-size", "8",
                    "--init-text", "the movie", "--max-length", "16")
    assert result.exit_code == 0, result.output
    assert "epoch 1: train loss" in result.stdout and "epoch 2: train loss" in result.stdout
    assert "special tokens into the prompt: [CLS]" in result.stdout
    assert f"saved PEFT adapter to {out}" in result.stdout
    info = json.loads((out / "training_info.json").read_text())
    assert info["labels"] == ["negative", "positive"]  # inferred, sorted

    pred = tmp_path / "pred.csv"
    result = invoke(runner, "predict", "-m", tiny_bert_dir, "-p", out, "-d", sentences_csv,
                    "--text-column", "sentence", "--out", pred)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(pred)
    reference = peft_probs(tiny_bert_dir, out, sentences, task="sequence-classification")
    probs = table[["p_negative", "p_positive"]].to_numpy()
    assert np.abs(probs - reference).max() <= TOLERANCE


def test_train_resume(runner, tiny_bert_dir, train_csv, tmp_path):
    def train(out, *extra):
        return invoke(runner, "train", "--model", tiny_bert_dir, "--data", train_csv,
                      "--text-column", "sentence", "--label-column", "label", "--out", out,
                      "--num-virtual-tokens", "2", "--init", "random", "--batch-size", "12",
                      *extra)

    first = train(tmp_path, "--epochs", "1")
    assert first.exit_code == 0, first.output
    second = train(tmp_path, "--epochs", "2", "--resume")
    assert second.exit_code == 0, second.output
    assert "epoch 1: train loss" in second.stdout and "epoch 2: train loss" in second.stdout
    info = json.loads((tmp_path / "training_info.json").read_text())
    assert [e["epoch"] for e in info["history"]] == [1, 2]
    assert_clean_error(train(tmp_path / "new", "--resume"), "no checkpoint to resume from")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--label-column", "label", "--init", "bogus"], ["--init 'bogus'", "text, random, vocab"]),
        (["--label-column", "label", "--epochs", "0"], ["epochs: 0; must be >= 1"]),
        (["--label-column", "stars"], ["column 'stars' not found"]),
        # 'negative' is neither a name in the given label set nor an index into it
        (["--label-column", "label", "--labels", "bad,good"],
         ["train.csv", "column 'label'", "'negative'", "allowed: bad, good"]),
    ],
    ids=["init", "epochs", "label-column", "labels"],
)
def test_train_bad_input_exits_2(runner, tiny_bert_dir, train_csv, tmp_path, args, fragments):
    result = invoke(runner, "train", "--model", tiny_bert_dir, "--data", train_csv,
                    "--text-column", "sentence", "--out", tmp_path / "a",
                    "--num-virtual-tokens", "2", *args)
    assert_clean_error(result, *fragments)
    assert not (tmp_path / "a" / "adapter_model.safetensors").exists()


def test_help_reads_well(runner):
    result = invoke(runner, "predict", "--help")
    assert result.exit_code == 0
    for option in ("--model", "--prompt", "--data", "--text-column", "--out", "--task",
                   "--labels"):
        assert option in result.stdout
    result = invoke(runner, "train", "--help")
    for option in ("--label-column", "--num-virtual-tokens", "--init", "--init-text", "--resume"):
        assert option in result.stdout


# ------------------------------------------------------------ untrained heads
def test_predict_refuses_an_untrained_head_in_one_line(runner, sentences_csv, tmp_path):
    prompt = tmp_path / "bare.safetensors"
    save_file({"p": torch.randn(4, 384, generator=torch.Generator().manual_seed(0))}, str(prompt))
    args = ["predict", "-m", "builtin:minilm", "-p", prompt, "-d", sentences_csv,
            "--text-column", "sentence", "--task", "sequence-classification"]
    assert_clean_error(invoke(runner, *args), "head is untrained", "classifier.weight",
                       "--allow-untrained-head")
    allowed = invoke(runner, *args, "--allow-untrained-head")
    assert allowed.exit_code == 0, allowed.output
    assert "head is untrained" in allowed.stderr  # said, not silent
    assert len(pd.read_csv(io.StringIO(allowed.stdout))) == 8


# ----------------------------------------------------------------- project
def test_project_a_tensor_file_needs_no_task(runner, tiny_bert_dir, tmp_path, sentences_csv):
    from transformers import AutoModelForMaskedLM

    words = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir).get_input_embeddings().weight
    prompt = tmp_path / "words.safetensors"
    save_file({"p": words[[5, 9, 12]].detach().clone()}, str(prompt))  # three real words
    result = invoke(runner, "project", "-m", tiny_bert_dir, "-p", prompt, "--json",
                    "--top-k", "1")
    assert result.exit_code == 0, result.output
    projection = json.loads(result.stdout)
    assert [p["neighbors"][0]["token_id"] for p in projection["positions"]] == [5, 9, 12]
    assert projection["fidelity"] is None
    # fidelity runs predictions: then the task is needed, and the flag is named
    result = invoke(runner, "project", "-m", tiny_bert_dir, "-p", prompt, "--data", sentences_csv,
                    "--text-column", "sentence")
    assert_clean_error(result, "task: not given", str(prompt), "--task", "sequence-classification")
