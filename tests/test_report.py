"""Reports rendered from the result JSON: HTML, Markdown, JUnit, figures and the writer."""

from __future__ import annotations

import base64
import copy
import html as html_lib
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from promptaudit.errors import InputError
from promptaudit.report import _writer as writer
from promptaudit.report import (
    escape_markdown,
    figures,
    render_html,
    render_junit,
    render_markdown,
    write_reports,
)
from promptaudit.report import html as report_html

FIXTURE = Path(__file__).parent / "fixtures" / "sample_result.json"
SCRIPT = "<script>alert(1)</script>"
ATTR = '"><img src=x onerror=alert(1)>'
MARKDOWN = "**bold** | [link](http://x)"
# An external resource reference: src/href/... pointing at a scheme or a
# protocol-relative URL, CSS url(...) that is not data:, @import, <link>.
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|srcset|action|poster|data|background)\s*=\s*["']?\s*"""
    r"""(?:[a-z][a-z0-9+.\-]*:(?<!data:)|//))"""
    r"""|url\(\s*["']?\s*(?!data:)|@import|<link\b|<iframe\b|<object\b|<embed\b""",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def page(result) -> str:
    return render_html(result)


@pytest.fixture(scope="module")
def markdown(result) -> str:
    return render_markdown(result)


def _null_numbers(value):
    """Every number (not bools or ints in lists of tokens) replaced by None."""
    if isinstance(value, dict):
        return {k: _null_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_null_numbers(v) for v in value]
    if isinstance(value, float):
        return None
    return value


# ---------------------------------------------------------------------------- HTML


def test_html_is_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert EXTERNAL.search(page) is None, EXTERNAL.search(page)
    # No attribute of any tag holds a URL other than in-page anchors and data: images.
    for tag in re.findall(r"<[a-zA-Z][^>]*>", page):  # escaped text holds no raw "<"
        for attr, value in re.findall(r"""\b(src|href)\s*=\s*["']?([^"'\s>]*)""", tag):
            assert value.startswith("#") if attr == "href" else value.startswith("data:image/png")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]+">', page)
    # 3 selection-rate charts (gender, race, intersection) + 3 attribution figures.
    assert len(images) == 6
    assert page.count("<img") == 6
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")


def test_html_escapes_every_payload(page):
    assert SCRIPT not in page
    assert "<img src=x" not in page
    assert re.search(r"<img[^>]*onerror", page) is None
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "**bold** | [link](http://x)" in page  # plain text in HTML, not a link
    assert 'href="http' not in page
    # The payloads appear escaped in the title, a group name, an example and the words.
    unescaped = html_lib.unescape(page)
    for payload in (SCRIPT, ATTR, MARKDOWN):
        assert payload in unescaped


def test_html_reads_in_order_and_says_it_in_words(page, result):
    text = html_lib.unescape(re.sub(r"<[^>]+>", " ", page))
    text = " ".join(text.split())
    assert re.findall(r'<section id="([a-z]+)"', page) == [
        "summary",
        "gates",
        "groups",
        "disparities",
        "counterfactual",
        "projection",
        "attribution",
        "baselines",
        "provenance",
        "glossary",
    ]
    headings = re.findall(r"<h([23])[^>]*>([^<]+)</h\1>", page)
    assert [h for _, h in headings[:4]] == [
        "Summary",
        "Largest gaps",
        "What the prompt reads as",
        "Gates",
    ]
    assert 'class="badge fail">FAIL<' in page[: page.index('<section id="summary"')]
    assert (
        "selection rate (share predicted 'accept') for group 'female' is 0.42 vs 0.61 for "
        "'male' (ratio 0.69, below the 0.8 threshold)" in text
    )
    assert "the lower end of its 95% interval, 0.50, is below the 0.8 threshold" in text
    assert "flip rate 0.075, within the 0.1 limit" in text
    assert "closest to: \u201cqualified hire he years " + SCRIPT in text
    assert "Trust in this reading: low . Used as a plain-text prompt" in text
    # Gate table: one row per gate, pass/fail in words.
    gate_table = page[
        page.index('<table class="gates">') : page.index("</table>", page.index('class="gates"'))
    ]
    assert gate_table.count("<tr>") == len(result["gates"]) + 1
    assert gate_table.count("FAIL</td>") == sum(not g["passed"] for g in result["gates"])
    assert gate_table.count("pass</td>") == sum(g["passed"] for g in result["gates"])
    assert "lower interval bound" in gate_table
    # Small groups flagged, intervals shown, provenance and glossary present.
    assert "small</span>" in page
    assert "[0.356, 0.484]" in page
    for term in (
        "Demographic parity",
        "Equalized odds",
        "Equal opportunity",
        "Flip rate",
        "Soft prompt",
        "Virtual token",
        "Nearest words",
        "Fidelity",
        "Integrated gradients",
        "Convergence delta",
        "Bootstrap interval",
    ):
        assert f"<dt>{term}</dt>" in page
    assert "builtin:minilm" in text and "e3b0" + "5" * 60 in text and "Seed 0" in text
    assert "torch 2.13.0" in text


def test_gap_sentences_compare_honestly(result):
    from promptaudit.report._common import gap_sentences

    close = copy.deepcopy(result)
    close["fairness"]["by_feature"]["gender"]["disparities"]["demographic_parity_ratio"] = 0.797
    close["gates"][0]["value"] = 0.797
    assert "(ratio 0.797, below the 0.8 threshold)" in gap_sentences(close)[0]
    # An interval-bound gate is described by the bound it checked.
    close["gates"][1]["value"] = 0.85
    assert "the lower end of its 95% interval, 0.85, meets the 0.8 threshold" in \
        gap_sentences(close)[1]


def test_fidelity_level_and_sentence_verdict(result, monkeypatch):
    """The pipeline may store the level in ``level`` and a sentence in ``verdict``."""
    monkeypatch.setattr(report_html, "_figure", lambda make, *, alt, caption="": {
        "uri": None, "alt": alt, "caption": caption})
    odd = copy.deepcopy(result)
    fidelity = odd["projection"]["fidelity"]
    del fidelity["message"]
    fidelity["level"] = "moderate"
    fidelity["verdict"] = "Moderate fidelity: the words are a partial explanation."
    page = render_html(odd)
    assert '<span class="trust trust-moderate">moderate</span>' in page
    assert "Moderate fidelity: the words are a partial explanation." in page
    assert "Trust in this reading: moderate. Used as" in render_markdown(odd)


def test_html_missing_sections_render_not_computed():
    minimal = {
        "schema_version": "1",
        "audit": {"name": "bare"},
        "gates": [],
        "passed": True,
        "projection": None,
        "attribution": None,
        "fairness": None,
        "baselines": None,
    }
    page = render_html(minimal)
    assert "<img" not in page
    text = html_lib.unescape(page)
    assert text.count("Not computed:") >= 7
    assert "PASS" in text and "no gates were configured" in text
    # Empty dict, not even the keys.
    assert "Not computed:" in render_html({})


def test_html_null_metrics_render_na(result):
    nulled = _null_numbers(copy.deepcopy(result))
    page = render_html(nulled)
    assert "n/a" in page
    assert "<script" not in page
    assert "Figure not drawn" in page  # group charts without values become notes
    assert "<img" not in page
    assert render_junit(nulled).count("<testcase") == len(result["gates"])
    assert "n/a" in render_markdown(nulled)


def _section_paths(result):
    """Top-level keys, plus the keys one level down in the big sections."""
    for key, value in result.items():
        yield (key,)
        if key in ("fairness", "projection", "attribution", "provenance", "task"):
            for sub in value:
                yield (key, sub)


def test_any_missing_or_null_part_renders(result, monkeypatch):
    # Figures are checked elsewhere; skipping them keeps this sweep fast.
    monkeypatch.setattr(report_html, "_figure", lambda make, *, alt, caption="": {
        "uri": None, "alt": alt, "caption": caption})
    for path in _section_paths(result):
        for mode in ("null", "missing"):
            broken = copy.deepcopy(result)
            parent = broken
            for key in path[:-1]:
                parent = parent[key]
            if mode == "null":
                parent[path[-1]] = None
            else:
                del parent[path[-1]]
            page = render_html(broken)
            assert "</html>" in page and "<script" not in page, (path, mode)
            assert render_markdown(broken).startswith("## "), (path, mode)
            ET.fromstring(render_junit(broken))


def test_html_does_not_interpret_mathtext_in_labels(result):
    odd = copy.deepcopy(result)
    groups = odd["fairness"]["by_feature"]["gender"]["by_group"]
    groups["$\\frac{1}{0}$"] = groups.pop("female")
    uri = figures.figure_to_data_uri(figures.group_metric_chart(odd["fairness"], "gender"))
    assert uri.startswith("data:image/png;base64,")


# ------------------------------------------------------------------------ figures


def test_figures_are_figures_and_stable(result):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    made = [
        figures.per_position_bars(result["attribution"]),
        figures.attribution_heatmap(result["attribution"], max_examples=3),
        figures.group_attribution_chart(result["attribution"]),
        figures.group_metric_chart(result["fairness"], "race", metric="true_positive_rate"),
    ]
    assert all(isinstance(fig, Figure) for fig in made)
    assert plt.get_fignums() == before  # no pyplot state touched
    assert len(made[1].axes[0].get_yticklabels()) == 3
    first = figures.figure_to_data_uri(made[0])
    again = figures.figure_to_data_uri(figures.per_position_bars(result["attribution"]))
    assert first == again
    assert b"Software" not in base64.b64decode(first.split(",", 1)[1])
    with pytest.raises(ValueError, match="no feature 'age'"):
        figures.group_metric_chart(result["fairness"], "age")
    with pytest.raises(ValueError, match="per_position is empty"):
        figures.per_position_bars({"per_position": []})


# ----------------------------------------------------------------------- Markdown


def test_markdown_summary(markdown, result):
    lines = markdown.splitlines()
    assert lines[0].startswith("## \u274c promptaudit FAIL: ")
    assert "**FAIL: 4 of 6 gates failed.**" in markdown
    assert (
        "| demographic\\_parity\\_ratio\\[gender\\] &gt;= 0.8 | 0.689 | point | \u274c FAIL |"
        in markdown
    )
    assert "**Counterfactual flip rate:** 7.5% of 200 tuples" in markdown
    assert "Trust in this reading: low." in markdown
    assert "model builtin:minilm" in lines[-1] and "seed 0" in lines[-1]
    # Table rows keep their column count: unescaped pipes only at cell borders.
    for line in lines:
        if line.startswith("| "):
            cells = re.split(r"(?<!\\)\|", line)
            assert len(cells) - 2 in (4,), line


def test_markdown_escapes_payloads(markdown):
    assert "<script" not in markdown
    assert "<img" not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert "**bold**" not in markdown
    assert "[link](" not in markdown
    assert "\\*\\*bold\\*\\* \\| \\[link\\](http://x)" in markdown


def test_escape_markdown():
    assert escape_markdown("a|b\nc\r\n*d*_e_`f`") == "a\\|b c \\*d\\*\\_e\\_\\`f\\`"
    assert escape_markdown("<b>&amp;</b>") == "&lt;b&gt;&amp;amp;&lt;/b&gt;"
    assert escape_markdown("$x$ ~~y~~ \\") == "\\$x\\$ \\~\\~y\\~\\~ \\\\"
    assert escape_markdown(None) == "n/a"


# -------------------------------------------------------------------------- JUnit


def test_junit_one_case_per_gate(result):
    root = ET.fromstring(render_junit(result))
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "promptaudit." + result["audit"]["name"]
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "demographic_parity_ratio[gender] >= 0.8",
        "demographic_parity_ratio >= 0.8",
        "equalized_odds_difference <= 0.1",
        "counterfactual_flip_rate <= 0.1",
        "accuracy >= 0.75",
        "equalized_odds_ratio[race] >= 0.5",
    ]
    failed = [c.find("failure") is not None for c in cases]
    assert failed == [not g["passed"] for g in result["gates"]]
    assert suite.get("tests") == "6" and suite.get("failures") == "4"
    message = cases[0].find("failure").get("message")
    assert message == "demographic_parity_ratio[gender] = 0.689 (point estimate), required >= 0.8"
    assert "not computable" in cases[5].find("failure").get("message")


def test_junit_survives_characters_xml_cannot_hold(result):
    odd = copy.deepcopy(result)
    odd["audit"]["name"] = "bad\x00\x1b name ]]> <x>"
    odd["gates"][0]["feature"] = "gen\x07der"
    root = ET.fromstring(render_junit(odd))
    assert root.find("testsuite").get("name") == "promptaudit.bad name ]]> <x>"
    assert (
        root.find("testsuite/testcase").get("name").startswith("demographic_parity_ratio[gender]")
    )


# ------------------------------------------------------------------------- writer


@pytest.fixture
def fast_html(monkeypatch, page):
    """Skip re-drawing figures in writer tests: the HTML itself is tested above."""
    monkeypatch.setattr(writer, "render_html", lambda result: page)


def test_write_reports_writes_four_files(result, tmp_path, fast_html, page):
    out = tmp_path / "reports" / "nested"
    paths = write_reports(result, out, name="screening")
    assert {k: p.name for k, p in paths.items()} == {
        "html": "screening.html",
        "json": "screening.json",
        "junit": "screening.junit.xml",
        "markdown": "screening.md",
    }
    assert sorted(os.listdir(out)) == sorted(p.name for p in paths.values())
    text = paths["json"].read_text(encoding="utf-8")
    assert json.loads(text) == result
    assert text == json.dumps(result, sort_keys=True, indent=2, allow_nan=False)
    assert paths["html"].read_text(encoding="utf-8") == page
    ET.parse(paths["junit"])
    assert paths["markdown"].read_text(encoding="utf-8").startswith("## ")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("broken", ["render_html", "render_junit", "render_markdown"])
def test_render_failure_leaves_previous_reports(result, tmp_path, monkeypatch, fast_html, broken):
    write_reports(result, tmp_path, name="audit")
    before = _snapshot(tmp_path)
    assert len(before) == 4

    def boom(result):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(writer, broken, boom)
    changed = copy.deepcopy(result)
    changed["passed"] = True
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_reports(changed, tmp_path, name="audit")
    assert _snapshot(tmp_path) == before  # same files, same bytes, no temp files


def test_nan_in_result_leaves_previous_reports(result, tmp_path, fast_html):
    write_reports(result, tmp_path, name="audit")
    before = _snapshot(tmp_path)
    bad = copy.deepcopy(result)
    bad["task"]["accuracy"] = float("nan")
    with pytest.raises(ValueError, match="not valid JSON"):
        write_reports(bad, tmp_path, name="audit")
    assert _snapshot(tmp_path) == before


def test_write_failure_removes_temp_file(result, tmp_path, monkeypatch, fast_html):
    write_reports(result, tmp_path, name="audit")
    before = _snapshot(tmp_path)
    calls = []
    real_fsync = os.fsync

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file's data
            raise OSError(5, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(writer.os, "fsync", failing_fsync)
    changed = copy.deepcopy(result)
    changed["passed"] = True
    with pytest.raises(OSError, match="Input/output error"):
        write_reports(changed, tmp_path, name="audit")
    after = _snapshot(tmp_path)
    assert sorted(after) == sorted(before)  # no temp file left
    assert after["audit.json"] == before["audit.json"]  # the failed file is untouched
    assert after["audit.html"] == before["audit.html"]


@pytest.mark.parametrize("name", ["", "   ", "a/b", "a\\b", "../up", ".", "..", "/abs"])
def test_bad_names_are_input_errors(result, tmp_path, name, fast_html):
    with pytest.raises(InputError) as info:
        write_reports(result, tmp_path, name=name)
    assert "\n" not in str(info.value)
    assert "report name" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_out_dir_is_an_input_error(result, tmp_path, monkeypatch, fast_html):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match=re.escape(str(blocker / "sub"))):
        write_reports(result, blocker / "sub", name="audit")
    with pytest.raises(InputError, match=re.escape(str(blocker))):
        write_reports(result, blocker, name="audit")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        write_reports(result, tmp_path, name="audit")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


# ------------------------------------------------------------ verdicts that say how sure they are


def _verdict_result(result: dict, *, works: bool | None, policy: str = "fail") -> dict:
    """The sample result with one inconclusive gate, competence and a classification report."""
    out = copy.deepcopy(result)
    out["audit"]["spec"]["gate_policy"] = {"inconclusive": policy}
    gates = [g for g in out["gates"] if g.get("passed")]
    for g in gates:
        g["status"] = "pass"
    undecided = {
        "metric": "demographic_parity_ratio", "feature": "gender & race", "op": ">=",
        "threshold": 0.8, "value": 0.78, "bound": "point", "interval": [0.61, 0.93],
        "status": "inconclusive", "passed": policy == "pass", "rows_to_decide": 2345,
        "rows_unit": "rows",
        "message": "demographic_parity_ratio for gender & race = 0.78 (point) is INCONCLUSIVE "
                   "against >= 0.8: its 95% interval [0.61, 0.93] straddles it",
    }
    out["gates"] = [*gates, undecided]
    out["passed"] = policy == "pass"
    reason = {True: "the prompt does its task: balanced accuracy 0.810, above chance (0.500)",
              False: "the prompt does not do its task: balanced accuracy 0.500 cannot be told "
                     "from chance (0.500 for 2 classes)",
              None: "no true labels (data.label_column is not set), so whether the prompt "
                    "does its task cannot be judged"}[works]
    out["task"]["competence"] = {
        "works": works, "accuracy": 0.81, "accuracy_interval": [0.77, 0.85],
        "chance_accuracy": 0.5, "baselines": {"no_prompt": 0.52}, "best_baseline": "no_prompt",
        "accuracy_over_baseline": 0.29, "accuracy_over_baseline_interval": [0.22, 0.35],
        "reason": reason,
    }
    out["task"]["classification_report"] = {
        "reject": {"precision": 0.8, "recall": 0.9, "f1-score": 0.847, "support": 50},
        "accept <b>": {"precision": None, "recall": 0.0, "f1-score": None, "support": 10},
        "accuracy": 0.75,
    }
    out["task"]["classification_report_by_group"] = {
        "gender": {"female": {"reject": {"precision": 0.7, "recall": 0.8, "f1-score": 0.747,
                                         "support": 20}}}}
    out["fairness"]["counterfactual"]["flip_rate_interval"] = [0.041, 0.112]
    return out


@pytest.fixture
def no_figures(monkeypatch):
    """Skip drawing figures: these tests read the text of the page."""
    monkeypatch.setattr(report_html.figures, "figure_to_data_uri", lambda figure: None)


def test_html_puts_competence_and_uncertainty_in_the_headline(result, no_figures):
    page = render_html(_verdict_result(result, works=False))
    head = page[: page.index('<section id="gates"')]
    text = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", head)).split())
    assert 'class="badge inconclusive">INCONCLUSIVE<' in head
    summary = text[text.index("Summary"):]
    # competence comes first in the summary, and says the fairness figures rest on a broken model
    assert summary.index("Competence:") < summary.index("INCONCLUSIVE:")
    assert "rest on a model that does not work" in text
    assert "0 / 3 gates failed 1 / 3 gates inconclusive" in text
    assert ("INCONCLUSIVE: 1 of " in text
            and "counted as failed under gate_policy.inconclusive: fail" in text)
    body = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    assert "? INCONCLUSIVE counted as failed; about 2345 rows would decide it" in body
    assert "[0.610, 0.930]" in body  # the gate's interval
    assert "bootstrap interval over tuples [0.041, 0.112]" in body
    assert "accept <b> n/a 0.000 n/a 10" in body  # undefined precision is n/a; label escaped
    assert "accept <b>" not in page
    for term in ("Verdict states", "Rows to decide", "Competence", "Balanced accuracy",
                 "Undefined"):
        assert f"<dt>{term}</dt>" in page
    works = render_html(_verdict_result(result, works=True, policy="pass"))
    assert "Competence: The prompt does its task" in works
    unknown = render_html(_verdict_result(result, works=None))
    assert "Competence cannot be judged: No true labels" in unknown


def test_markdown_and_junit_show_inconclusive(result):
    closed = _verdict_result(result, works=False)
    markdown = render_markdown(closed)
    lines = markdown.splitlines()
    assert lines[0].startswith("## \u2753 promptaudit INCONCLUSIVE: ")
    assert lines[2].startswith("**Competence: The prompt does not do its task")
    assert "\u2753 INCONCLUSIVE (counted as failed; \\~2345 rows would decide it)" in markdown
    assert "INCONCLUSIVE: 1 of 3 gates was inconclusive" in markdown
    assert "| reject | 0.800 | 0.900 | 0.847 | 50 |" in markdown
    assert "| gender | female | reject | 0.700 | 0.800 | 0.747 | 20 |" in markdown
    assert "accept &lt;b&gt;" in markdown and "<b>" not in markdown
    assert "(interval \\[0.041, 0.112\\])" in markdown
    root = ET.fromstring(render_junit(closed))
    case = root.find("testsuite").findall("testcase")[-1]
    failure = case.find("failure")
    assert failure.get("type") == "GateInconclusive"
    assert failure.get("message").startswith("INCONCLUSIVE (counted as failed): ")
    opened = ET.fromstring(render_junit(_verdict_result(result, works=True, policy="pass")))
    suite = opened.find("testsuite")
    assert suite.get("skipped") == "1" and suite.get("failures") == "0"
    assert suite.findall("testcase")[-1].find("skipped").get("message").startswith(
        "INCONCLUSIVE (counted as passed)")


def test_intersection_in_by_feature_is_shown_once(result, no_figures):
    out = copy.deepcopy(result)
    fairness = out["fairness"]
    joint = fairness["intersection"]
    joint["feature"] = " & ".join(fairness["sensitive_features"])
    fairness["by_feature"][joint["feature"]] = copy.deepcopy(joint)
    page = render_html(out)
    headings = re.findall(r'<h3 class="text">([^<]+)</h3>', page)
    assert sum(joint["feature"] in html_lib.unescape(h) for h in headings) == 1
    assert not any("(intersection)" in h for h in headings)
