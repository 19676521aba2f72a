"""The PDF report (``promptaudit pdf``, ``run --pdf``; issue 25, item 6).

The PDF is turned back into text (``pdftotext``) and pixels (``pdftoppm``,
``pdfimages``) and checked: the verdict on page 1, every table and figure present,
and each bias-audit table whole on one page. The engine tests need headless Chromium
and poppler-utils (CI installs both); the no-engine and bad-path errors need neither.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import audit_helpers as helpers
import numpy as np
import pytest
from matplotlib import image as mpimg
from typer.testing import CliRunner

from promptaudit.cli import app
from promptaudit.report import render_html

CHROMIUM = shutil.which("chromium")
POPPLER = all(shutil.which(tool) for tool in ("pdftotext", "pdftoppm", "pdfimages"))
FIXTURE = Path(__file__).parent / "fixtures" / "sample_result.json"

needs_engine = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None or not POPPLER,
                       reason="chromium or poppler-utils is not installed"),
]


def pages_text(pdf: Path) -> list[str]:
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    return text.split("\f")[:-1] if text.endswith("\f") else text.split("\f")


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory) -> Path:
    if CHROMIUM is None or not POPPLER:
        pytest.skip("chromium or poppler-utils is not installed")
    folder = tmp_path_factory.mktemp("pdf")
    result = folder / "sample.json"
    shutil.copyfile(FIXTURE, result)
    run = CliRunner().invoke(app, ["pdf", str(result), "--out", str(folder / "out.pdf")])
    assert run.exit_code == 0, run.output
    return folder / "out.pdf"


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None or not POPPLER, reason="chromium or poppler-utils missing")
def test_verdict_is_on_page_one(sample_pdf):
    first = squash(pages_text(sample_pdf)[0])
    assert sample_pdf.read_bytes().startswith(b"%PDF-")
    assert "FAIL" in first
    statuses = [gate["status"] for gate in json.loads(FIXTURE.read_text())["gates"]]
    failed, unsure, total = statuses.count("fail"), statuses.count("inconclusive"), len(statuses)
    assert failed and unsure  # the sample shows both words
    assert (f"{failed} of {total} gates failed and {unsure} of {total} gates were inconclusive"
            in first)
    # and page 1 is not blank: some dark pixels once rasterised
    subprocess.run(["pdftoppm", "-r", "40", "-f", "1", "-l", "1", "-png", str(sample_pdf),
                    str(sample_pdf.with_suffix(""))], check=True)
    png = next(sample_pdf.parent.glob(sample_pdf.stem + "-*1.png"))
    pixels = mpimg.imread(png)[..., :3]
    assert (pixels.mean(axis=2) < 0.5).mean() > 0.005


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None or not POPPLER, reason="chromium or poppler-utils missing")
def test_tables_and_figures_are_all_there(sample_pdf):
    pages = [squash(page) for page in pages_text(sample_pdf)]
    everything = " ".join(pages)
    result = json.loads(FIXTURE.read_text(encoding="utf-8"))
    for heading in ("Bias audit summary", "Gates", "Impact ratio", "z-score",
                    "Shortfall", "Unknown"):
        assert heading in everything, heading
    for table in result["bias_audit"]["tables"].values():
        groups = [row["group"] for row in table["rows"]]
        where = {i for i, page in enumerate(pages) for g in groups if g in page}
        assert all(any(g in page for page in pages) for g in groups)
        # a table is kept whole: its first and last category are on the same page
        first = {i for i, page in enumerate(pages) if groups[0] in page}
        last = {i for i, page in enumerate(pages) if groups[-1] in page}
        assert first & last, (table["feature"], where)
    for gate in result["gates"]:
        assert gate["metric"] in everything.replace(" ", "") or gate["metric"] in everything
    # every figure of the HTML report is an image in the PDF
    figures = render_html(result).count("<img ")
    listing = subprocess.run(["pdfimages", "-list", str(sample_pdf)], capture_output=True,
                             text=True, check=True).stdout.splitlines()[2:]
    assert figures >= 3 and len(listing) >= figures


def test_no_engine_is_exit_2_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTAUDIT_CHROMIUM", str(tmp_path / "no-such-browser"))
    result = tmp_path / "r.json"
    shutil.copyfile(FIXTURE, result)
    run = CliRunner().invoke(app, ["pdf", str(result)])
    assert run.exit_code == 2 and "no PDF engine found" in run.output
    assert not (tmp_path / "r.pdf").exists()
    # `run --pdf` refuses before it reads the spec or loads a model
    run = CliRunner().invoke(app, ["run", str(tmp_path / "missing.yaml"), "--pdf",
                                   "--out", str(tmp_path / "reports")])
    assert run.exit_code == 2 and "no PDF engine found" in run.output
    assert not (tmp_path / "reports").exists()


def test_pdf_out_that_is_the_result_is_refused(tmp_path):
    result = tmp_path / "r.json"
    shutil.copyfile(FIXTURE, result)
    before = result.read_bytes()
    run = CliRunner().invoke(app, ["pdf", str(result), "--out", str(result)])
    assert run.exit_code == 2 and "would overwrite an input" in run.output
    assert result.read_bytes() == before


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None or not POPPLER, reason="chromium or poppler-utils missing")
def test_run_pdf_writes_the_pdf_beside_the_reports(tmp_path, tiny_bert_dir):
    prompt = helpers.write_prompt(tmp_path / "prompt.safetensors")
    frame = helpers.eval_frame()
    model = helpers.make_seqcls_model(tiny_bert_dir, tmp_path / "model", prompt=prompt,
                                      texts=frame["sentence"].tolist())
    helpers.write_csv(tmp_path / "eval.csv", frame)
    spec = helpers.base_spec(model=str(model), prompt=str(prompt), data="eval.csv")
    spec["attribution"]["enabled"] = False
    spec["projection"]["enabled"] = False
    spec["fairness"]["bootstrap"] = 0
    spec["gates"] = []
    path = helpers.write_spec(tmp_path / "audit.yaml", spec)
    run = CliRunner().invoke(app, ["run", str(path), "--pdf", "--out", str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    pdf = tmp_path / "out" / f"{spec['name']}.pdf"
    assert f"pdf: {pdf}" in run.output
    first = squash(pages_text(pdf)[0])
    assert "PASS" in first and spec["name"] in first
    assert np.isfinite(pdf.stat().st_size)
