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
from report_payloads import ATTR, MARKDOWN, SCRIPT, with_payloads

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
from promptaudit.report.escape import (
    Verbatim,
    display_token,
    escape_controls,
    markdown_finalize,
    strip_xml_invalid,
)

FIXTURE = Path(__file__).parent / "fixtures" / "sample_result.json"
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
def payloaded(result) -> dict:
    return with_payloads(result)


@pytest.fixture(scope="module")
def page(result) -> str:
    return render_html(result)


@pytest.fixture(scope="module")
def payload_page(payloaded) -> str:
    return render_html(payloaded)


@pytest.fixture(scope="module")
def markdown(result) -> str:
    return render_markdown(result)


def _text(page: str) -> str:
    """The page's words: tags dropped, entities unescaped, whitespace collapsed."""
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _section(page: str, name: str, next_name: str) -> str:
    """The HTML of section ``name`` (up to the section ``next_name``)."""
    return page[page.index(f'<section id="{name}"'):page.index(f'<section id="{next_name}"')]


def _statuses(result: dict) -> dict[str, int]:
    """How many gates of the result passed, failed and were inconclusive."""
    statuses = [g["status"] for g in result["gates"]]
    return {word: statuses.count(word) for word in ("pass", "fail", "inconclusive")}


def _selection_gap(result: dict, feature: str) -> tuple[str, float, str, float]:
    """Lowest and highest selection-rate groups of ``feature``: (group, rate, group, rate)."""
    groups = result["fairness"]["by_feature"][feature]["by_group"]
    rates = sorted((g["selection_rate"], name) for name, g in groups.items())
    (low_v, low_g), (high_v, high_g) = rates[0], rates[-1]
    return low_g, low_v, high_g, high_v


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
    # 3 selection-rate charts (gender, race, intersection) + 2 attribution figures (the
    # per-group chart is left out: the sample's groups are all under min_group_size).
    assert len(images) == 5
    assert page.count("<img") == 5
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")


def test_html_escapes_every_payload(payload_page, payloaded):
    page = payload_page
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
    title = re.search(r"<title>([^<]*)</title>", page).group(1)
    assert html_lib.unescape(title).endswith(payloaded["audit"]["name"])
    bias = page[page.index('<section id="bias-audit"'):page.index('<section id="summary"')]
    groups = page[page.index('<section id="groups"'):page.index('<section id="disparities"')]
    for section in (bias, groups):  # a group name and its intersection groups
        assert f"female &amp; {html_lib.escape(ATTR)}" in section.replace("&#34;", "&quot;")
        assert html_lib.escape(MARKDOWN) in section
    assert f"auditor {ATTR}" in html_lib.unescape(bias) and f"source {SCRIPT}" in \
        html_lib.unescape(bias)
    attribution = _section(page, "attribution", "baselines")
    assert f"years {SCRIPT}" in html_lib.unescape(attribution)
    assert SCRIPT in html_lib.unescape(_section(page, "projection", "attribution"))


def test_html_reads_in_order_and_says_it_in_words(page, result, payload_page, payloaded,
                                                  monkeypatch):
    text = _text(page)
    assert re.findall(r'<section id="([a-z-]+)"', page) == [
        "bias-audit",
        "summary",
        "gates",
        "groups",
        "disparities",
        "counterfactual",
        "projection",
        "position-importance",
        "departures",
        "attribution",
        "baselines",
        "provenance",
        "glossary",
    ]
    headings = [h for _, h in re.findall(r"<h([23])[^>]*>([^<]+)</h\1>", page)]
    # The bias audit summary comes first: one table per category, then the intersection.
    categories = result["bias_audit"]["categories"]
    tables = [*categories, *(t for t in result["bias_audit"]["tables"] if t not in categories)]
    assert headings[: len(tables) + 1] == ["Bias audit summary",
                                           *(html_lib.escape(t) for t in tables)]
    assert headings[len(tables) + 1: len(tables) + 5] == [
        "Summary",
        "Largest gaps",
        "What the prompt reads as",
        "Gates",
    ]
    assert not result["passed"]
    assert 'class="badge fail">FAIL<' in page[: page.index('<section id="bias-audit"')]
    # The largest selection-rate gap, from the fixture's own numbers; the feature has a
    # lower-bound gate, so the sentence names the bound it checked.
    fairness = result["fairness"]
    feature = fairness["worst_feature"]["demographic_parity_ratio"]
    low_g, low_v, high_g, high_v = _selection_gap(result, feature)
    ratio = fairness["by_feature"][feature]["disparities"]["demographic_parity_ratio"]
    (bound_gate,) = [g for g in result["gates"]
                     if g["feature"] == feature and g["metric"] == "demographic_parity_ratio"]
    assert bound_gate["bound"] == "lower" and bound_gate["value"] < bound_gate["threshold"]
    assert (
        f"{feature}: selection rate (share predicted 'accept') for group '{low_g}' is "
        f"{low_v:.2f} vs {high_v:.2f} for '{high_g}' (ratio {ratio:.2f}; the lower end of its "
        f"95% interval, {bound_gate['value']:.2f}, is below the "
        f"{bound_gate['threshold']:g} threshold)." in text
    )
    counterfactual = fairness["counterfactual"]
    (flip_gate,) = [g for g in result["gates"] if g["metric"] == "counterfactual_flip_rate"]
    where = "within" if flip_gate["value"] <= flip_gate["threshold"] else "above"
    assert (f"flip rate {counterfactual['flip_rate']:.3f}, {where} the "
            f"{flip_gate['threshold']:g} limit") in text
    low, high = counterfactual["flip_rate_interval"]
    assert f"interval [{low:.3f}, {high:.3f}]" in text
    payload_words = payloaded["projection"]["fidelity"]["projected_text"]
    assert SCRIPT in payload_words
    assert f"closest to: \u201c{payload_words}\u201d" in _text(payload_page)
    trust = result["projection"]["trust"]
    assert (f"Trust in this reading: {trust['level']} . {trust['reason']} "
            "Used as a plain-text prompt") in text
    # Gate table: one row per gate, pass/fail/inconclusive in words.
    gate_table = page[
        page.index('<table class="gates">') : page.index("</table>", page.index('class="gates"'))
    ]
    counts = _statuses(result)
    assert counts["fail"] and counts["pass"] and counts["inconclusive"]
    assert gate_table.count("<tr>") == len(result["gates"]) + 1
    assert gate_table.count("FAIL</td>") == counts["fail"]
    assert gate_table.count("pass</td>") == counts["pass"]
    assert gate_table.count("? INCONCLUSIVE<") == counts["inconclusive"]
    assert gate_table.count("lower interval bound") == sum(
        g["bound"] == "lower" for g in result["gates"])
    # Intervals shown: every group's selection rate with its bootstrap interval.
    for name, interval in fairness["by_feature"]["gender"]["intervals"].items():
        rate = fairness["by_feature"]["gender"]["by_group"][name]["selection_rate"]
        assert f"{name} " in text
        assert f"{rate:.3f} [{interval['selection_rate'][0]:.3f}, " \
               f"{interval['selection_rate'][1]:.3f}]" in text
    # Small groups flagged: none in the fixture (only the legend names the flag), and a
    # group below min_group_size gets the flag on its own row.
    assert not any(b["small_groups"] for b in fairness["by_feature"].values())
    assert page.count('<span class="flag">small</span>') == 1
    small = copy.deepcopy(result)
    race = small["fairness"]["by_feature"]["race"]
    race["by_group"]["White"].update(count=5, small=True)
    race["small_groups"] = ["White"]
    monkeypatch.setattr(report_html, "_figure", lambda make, *, alt, caption="": {
        "uri": None, "alt": alt, "caption": caption})
    small_page = render_html(small)
    assert small_page.count('<span class="flag">small</span>') == 2
    assert re.search(r'>White <span class="flag">small</span></th>', small_page)
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
    provenance = result["provenance"]
    assert provenance["model"]["reference"] in text and f"Seed {provenance['seed']}" in text
    for digest in (*provenance["prompt"]["sha256"].values(),
                   *provenance["model"]["sha256"].values()):
        assert digest in text
    assert result["integrity"]["content_sha256"] in text
    assert f"torch {provenance['versions']['torch']}" in text


def test_gap_sentences_compare_honestly(result):
    from promptaudit.report._common import gap_sentences

    def gender_sentence(out):
        (sentence,) = [s for s in gap_sentences(out) if s.startswith("gender: selection rate")]
        return sentence

    # A point gate on gender's ratio just under its threshold: shown with the digits
    # that tell it from the threshold, and called below it.
    close = copy.deepcopy(result)
    close["fairness"]["by_feature"]["gender"]["disparities"]["demographic_parity_ratio"] = 0.797
    gate = {"metric": "demographic_parity_ratio", "feature": "gender", "op": ">=",
            "threshold": 0.8, "value": 0.797, "bound": "point", "interval": None,
            "status": "fail", "passed": False, "message": "demographic_parity_ratio[gender]"}
    close["gates"] = [gate]
    assert "(ratio 0.797, below the 0.8 threshold)" in gender_sentence(close)
    # An interval-bound gate is described by the bound it checked.
    gate.update(bound="lower", value=0.85, status="pass", passed=True)
    assert "the lower end of its 95% interval, 0.85, meets the 0.8 threshold" in \
        gender_sentence(close)
    # The real fixture's lower-bound gate on the intersection, by the bound it checked.
    (real,) = [g for g in result["gates"] if g["bound"] == "lower"]
    (sentence,) = [s for s in gap_sentences(result)
                   if s.startswith(f"{real['feature']}: selection rate")]
    assert (f"the lower end of its 95% interval, {real['value']:.2f}, is below the "
            f"{real['threshold']:g} threshold") in sentence


def test_fidelity_level_and_sentence_verdict(result, page, markdown, monkeypatch):
    """The pipeline stores the level in ``level`` and a sentence in ``verdict``."""
    fidelity = result["projection"]["fidelity"]
    assert "message" not in fidelity  # the real shape: level + verdict sentence
    level, verdict = fidelity["level"], fidelity["verdict"]
    assert level in ("high", "moderate", "low") and len(verdict.split()) > 3
    projection = page[page.index('<section id="projection"'):]
    assert f'<span class="trust trust-{level}">{level}</span>' in projection
    assert verdict in _text(page)
    # The summary's level is the overall trust (fidelity and typicality together) ...
    trust = result["projection"]["trust"]["level"]
    assert trust != level
    assert f"Trust in this reading: {trust}." in markdown
    # ... and falls back to the fidelity level when there is no trust block.
    monkeypatch.setattr(report_html, "_figure", lambda make, *, alt, caption="": {
        "uri": None, "alt": alt, "caption": caption})
    odd = copy.deepcopy(result)
    del odd["projection"]["trust"]
    assert f'<span class="trust trust-{level}">{level}</span>. Used as' in render_html(odd)
    assert f"Trust in this reading: {level}. Used as" in render_markdown(odd)


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


def _groups_large_enough(attribution: dict) -> dict:
    """The attribution with every group counted as large enough to plot (the sample
    attributes 4 rows, under its min_group_size; such groups are never drawn)."""
    attribution = copy.deepcopy(attribution)
    for block in attribution["by_group"].values():
        block.update(small_groups=[], min_group_size=1)
    return attribution


def test_figures_are_figures_and_stable(result):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    made = [
        figures.per_position_bars(result["attribution"]),
        figures.attribution_heatmap(result["attribution"], max_examples=3),
        figures.group_attribution_chart(_groups_large_enough(result["attribution"])),
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


def _assert_tables_keep_columns(markdown: str) -> int:
    """Every table row has its header's cell count: unescaped pipes only at borders."""
    width = None
    rows = 0
    for line in markdown.splitlines():
        if not line.startswith("| "):
            width = None
            continue
        cells = len(re.split(r"(?<!\\)\|", line)) - 2
        if width is None:
            width = cells
        assert cells == width, line
        rows += 1
    return rows


def test_markdown_summary(markdown, result, payloaded):
    lines = markdown.splitlines()
    assert lines[0] == "## \u274c promptaudit FAIL: " + result["audit"]["name"]
    n, counts = len(result["gates"]), _statuses(result)
    assert (f"**FAIL: {counts['fail']} of {n} gates failed and {counts['inconclusive']} of {n} "
            "gates were inconclusive (the interval straddles the threshold), counted as failed "
            "under gate\\_policy.inconclusive: fail.**") in markdown
    (bound_gate,) = [g for g in result["gates"] if g["bound"] == "lower"]
    low, high = bound_gate["interval"]
    assert (
        f"| demographic\\_parity\\_ratio\\[gender &amp; race\\] &gt;= 0.8 | "
        f"{bound_gate['value']:.3f} \\[{low:.3f}, {high:.3f}\\] | lower bound | \u274c FAIL |"
        in markdown
    )
    counterfactual = result["fairness"]["counterfactual"]
    assert (f"**Counterfactual flip rate:** {100 * counterfactual['flip_rate']:.1f}% of "
            f"{counterfactual['n_tuples']} tuples") in markdown
    assert f"Trust in this reading: {result['projection']['trust']['level']}." in markdown
    # The bias audit summary: one table per category with the impact ratios.
    assert "### Bias audit summary" in markdown
    for feature, table in result["bias_audit"]["tables"].items():
        assert f"**{feature.replace('&', '&amp;')}**" in markdown
        for row in table["rows"]:
            assert f" | {row['n']} | {row['n_selected']} | {row['rate']:.3f} | " \
                   f"{row['impact_ratio']:.3f} | " in markdown
    assert "model builtin:minilm" in lines[-1] and "seed 0" in lines[-1]
    assert _assert_tables_keep_columns(markdown) > len(result["gates"])
    assert _assert_tables_keep_columns(render_markdown(payloaded)) > len(result["gates"])


def test_markdown_escapes_payloads(payloaded):
    markdown = render_markdown(payloaded)
    assert "<script" not in markdown
    assert "<img" not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert "**bold**" not in markdown
    assert "[link](" not in markdown
    escaped = "\\*\\*bold\\*\\* \\| \\[link\\](http://x)"
    assert markdown.splitlines()[0].endswith(escaped)  # the audit name
    assert f"| female &amp; {escaped} | " in markdown  # an intersection group's row
    assert f"| statement {escaped} |" in markdown  # audit_info
    assert '| auditor "&gt;&lt;img src=x onerror=alert(1)&gt; |' in markdown


def test_escape_markdown():
    assert escape_markdown("a|b\nc\r\n*d*_e_`f`") == "a\\|b c \\*d\\*\\_e\\_\\`f\\`"
    assert escape_markdown("<b>&amp;</b>") == "&lt;b&gt;&amp;amp;&lt;/b&gt;"
    assert escape_markdown("$x$ ~~y~~ \\") == "\\$x\\$ \\~\\~y\\~\\~ \\\\"
    assert escape_markdown(None) == "n/a"
    assert escape_markdown(Verbatim("a_b")) == "a\\_b"  # escaping is the finalize's choice
    assert markdown_finalize(Verbatim("a_b [x]")) == "a_b [x]"
    assert markdown_finalize("a_b") == "a\\_b"


def test_the_three_control_character_sets():
    """One C0 core; Markdown drops DEL too, XML surrogates, the terminal C1 and bidi marks."""
    core = "".join(map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]))
    kept = "\t\n"
    assert escape_markdown(core + "\x7fa\tb") == "a\tb"
    assert escape_markdown("a\rb") == "a b"  # a carriage return is a line break there
    assert strip_xml_invalid(core + "\ud800\ufffe\uffffa" + kept + "\x7f") == "a" + kept + "\x7f"
    shown = escape_controls("\x1b[31m\r\x85\u202e" + kept)
    assert shown == "\\x1b[31m\\x0d\\x85\\u202e" + kept
    assert escape_controls("a\nb\rc", keep_newlines=False) == "a\\nb\\rc"
    assert all(f"\\x{ord(c):02x}" in escape_controls(c) for c in core)


def test_display_token_reads_pieces_markers_and_display_forms():
    assert display_token("##ing") == "\u2026ing"
    assert display_token("##") == "##"  # a bare marker is a token of its own
    assert display_token("\u0120movie") == "movie"
    assert display_token("\u2581film") == "film"
    assert display_token("\u0120") == "\u0120"
    assert display_token("raw", " shown ") == "shown"  # the projection's display form wins
    assert display_token("##s", "s") == "\u2026s"
    assert display_token(None) == ""


def test_the_tradeoff_table_is_one_table_in_two_lengths():
    from promptaudit.report.before_after import tradeoff_markdown, tradeoff_table

    rows = [
        {"weight": None, "accuracy": 0.9, "accuracy_change": 0.0, "dp_ratio": 0.7,
         "flip_rate": 0.1, "mean_abs_delta": 0.2, "within_budget": True, "pareto": None,
         "chosen": False},
        {"weight": 10, "accuracy": 0.88, "accuracy_change": -0.02, "dp_ratio": None,
         "flip_rate": 0.05, "mean_abs_delta": 0.1, "within_budget": True, "pareto": True,
         "chosen": True},
    ]
    assert tradeoff_markdown(rows, 0.05).splitlines() == [
        "Validation accuracy budget: at most 0.05 below the original.",
        "",
        "| weight | accuracy | change | DP ratio (swapped) | flip rate | mean abs delta "
        "| within budget | Pareto | chosen |",
        "|---|---|---|---|---|---|---|---|---|",
        "| original | 0.9000 | +0.0000 | 0.7000 | 0.1000 | 0.2000 | yes | - |  |",
        "| 10 | 0.8800 | -0.0200 | undefined | 0.0500 | 0.1000 | yes | yes | yes |",
    ]
    short = tradeoff_table(rows, detailed=False)
    assert short["headers"] == ["weight", "val. accuracy", "DP ratio (swapped)", "flip rate",
                                "mean abs delta", "within budget", "chosen"]
    assert short["rows"][1] == ["10", "0.8800", "undefined", "0.0500", "0.1000", "yes", "yes"]


def test_comparison_html_escapes_user_text_by_autoescape():
    from promptaudit.report.before_after import comparison_html, comparison_markdown

    evil = "<script>alert('x')</script> **b** |"
    comparison = {
        "before": {"name": evil, "prompt": "p", "passed": True},
        "after": {"name": "after", "prompt": None, "passed": False},
        "max_regression": None, "differences": [evil],
        "metrics": [{"metric": "accuracy_over_baseline", "direction": "higher", "before": 0.5,
                     "after": 0.25, "after_interval": [0.1, 0.3], "change": -0.25,
                     "regressed": False, "verdict": "worse", "differences": [evil]}],
        "gates": {"before": [], "after": []},
    }
    page = comparison_html(comparison)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "title='&lt;script&gt;alert(&#39;x&#39;)" in page  # the attribute stays closed
    assert "(prompt None), gates failed" in page
    markdown = comparison_markdown(comparison)
    assert "&lt;script&gt;alert('x')&lt;/script&gt; \\*\\*b\\*\\* \\|" in markdown
    assert "| accuracy_over_baseline † | higher | 0.5000 | 0.2500 | [0.1000, 0.3000] |" in markdown
    assert "(prompt n/a), gates failed" in markdown


# -------------------------------------------------------------------------- JUnit


def test_junit_one_case_per_gate(result):
    root = ET.fromstring(render_junit(result))
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "promptaudit." + result["audit"]["name"]
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "demographic_parity_ratio >= 0.8",
        "equalized_odds_difference <= 0.1",
        "counterfactual_flip_rate <= 0.05",
        "min_impact_ratio >= 0.8",
        "accuracy_over_baseline >= 0",
        "demographic_parity_ratio[gender & race] >= 0.8",
    ]
    failed = [c.find("failure") is not None for c in cases]
    assert failed == [not g["passed"] for g in result["gates"]]
    types = [c.find("failure").get("type") if c.find("failure") is not None else None
             for c in cases]
    assert types == [{"fail": "GateFailed", "inconclusive": "GateInconclusive"}.get(g["status"])
                     for g in result["gates"]]
    assert suite.get("tests") == str(len(cases))
    assert suite.get("failures") == str(sum(not g["passed"] for g in result["gates"]))
    gate = result["gates"][-1]
    assert cases[-1].find("failure").get("message") == (
        f"demographic_parity_ratio[gender & race] = {gate['value']:.3f} (lower interval bound), "
        "required >= 0.8")
    # A gate whose value could not be computed fails and says so.
    odd = copy.deepcopy(result)
    odd["gates"][1].update(value=None, status="fail", passed=False)
    case = ET.fromstring(render_junit(odd)).find("testsuite").findall("testcase")[1]
    assert "not computable" in case.find("failure").get("message")


def test_junit_escapes_payloads(payloaded):
    odd = copy.deepcopy(payloaded)
    odd["gates"][-1]["feature"] = f"gender & {ATTR}"
    xml = render_junit(odd)
    assert "<script" not in xml and "<img" not in xml
    suite = ET.fromstring(xml).find("testsuite")
    assert suite.get("name") == "promptaudit." + payloaded["audit"]["name"]
    case = suite.findall("testcase")[-1]
    assert case.get("name").startswith(f"demographic_parity_ratio[gender & {ATTR}]")
    assert f"[gender & {ATTR}]" in case.find("failure").get("message")


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


def test_write_reports_writes_five_files(result, tmp_path, fast_html, page):
    out = tmp_path / "reports" / "nested"
    paths = write_reports(result, out, name="screening")
    assert {k: p.name for k, p in paths.items()} == {
        "html": "screening.html",
        "json": "screening.json",
        "junit": "screening.junit.xml",
        "markdown": "screening.md",
        "bias_audit": "screening.bias_audit.csv",
    }
    assert sorted(os.listdir(out)) == sorted(p.name for p in paths.values())
    text = paths["json"].read_text(encoding="utf-8")
    assert json.loads(text) == result
    assert text == json.dumps(result, sort_keys=True, indent=2, allow_nan=False)
    assert paths["html"].read_text(encoding="utf-8") == page
    ET.parse(paths["junit"])
    assert paths["markdown"].read_text(encoding="utf-8").startswith("## ")
    csv_rows = paths["bias_audit"].read_text(encoding="utf-8").splitlines()
    assert len(csv_rows) > sum(len(t["rows"]) for t in result["bias_audit"]["tables"].values())
    # Without a bias_audit section there is no CSV: four files.
    plain = copy.deepcopy(result)
    del plain["bias_audit"]
    assert sorted(write_reports(plain, tmp_path / "plain", name="screening")) == [
        "html", "json", "junit", "markdown"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("broken", ["render_html", "render_junit", "render_markdown"])
def test_render_failure_leaves_previous_reports(result, tmp_path, monkeypatch, fast_html, broken):
    write_reports(result, tmp_path, name="audit")
    before = _snapshot(tmp_path)
    assert len(before) == 5  # html, json, junit, md and the bias-audit CSV

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
    n = len(_verdict_result(result, works=False)["gates"])
    assert f"0 / {n} gates failed 1 / {n} gates inconclusive" in text
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
    assert f"INCONCLUSIVE: 1 of {len(closed['gates'])} gates was inconclusive" in markdown
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
    groups = page[page.index('<section id="groups"'):page.index('<section id="disparities"')]
    headings = re.findall(r'<h3 class="text">([^<]+)</h3>', groups)
    assert sum(joint["feature"] in html_lib.unescape(h) for h in headings) == 1
    assert not any("(intersection)" in h for h in headings)
