"""Group attributions with their caveats, readable words and the drift wording (issue 23)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promptaudit.attribution import group_attribution, like_for_like_differences
from promptaudit.report import render_html, render_markdown
from promptaudit.report.html import build_html_context

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sample_result.json"


def _planted(seed: int = 0):
    """Attributions that depend on the predicted label everywhere, plus one planted gap.

    Group ``b`` is mostly predicted ``accept`` and group ``a`` mostly ``reject``;
    every position's attribution flips sign with the predicted label, so the raw
    group means differ at every position. Only position 3 differs within a label.
    """
    rng = np.random.default_rng(seed)
    n, positions = 240, 6
    group = np.array(["a"] * 120 + ["b"] * 120, dtype=object)
    predicted = np.where(group == "a", rng.random(n) < 0.25, rng.random(n) < 0.75)
    label = np.where(predicted, "accept", "reject")
    attr = rng.normal(0, 0.004, size=(n, positions))
    attr += np.where(predicted, 0.05, -0.05)[:, None]  # sign follows the label
    attr[group == "b", 3] += 0.03  # the planted gap
    attr[:, 5] = np.where(predicted, 0.05, -0.05)  # label alone, no noise: no gap at all
    return attr, group, label


def test_a_planted_gap_is_found_and_a_label_mix_gap_is_no_evidence():
    attr, group, label = _planted()
    raw = group_attribution(attr, pd.DataFrame({"g": group}), min_group_size=30)["g"]
    # without conditioning, every position looks like a large group gap
    assert min(raw["max_difference"]) > 0.02
    # an integration error of 0.005 (attribution's tolerance is 0.02 by default)
    like = like_for_like_differences(attr, group, label, min_group_size=30, error_scale=0.005,
                                     condition="predicted_label", seed=0)
    (comparison,) = like["comparisons"]
    assert (comparison["group"], comparison["reference"]) == ("b", "a") or (
        comparison["group"], comparison["reference"]) == ("a", "b")
    assert comparison["evidence"] == [False, False, False, True, False, False]
    assert [t["position"] for t in like["top_positions"]] == [3]
    sign = 1 if comparison["group"] == "b" else -1
    assert comparison["difference"][3] == pytest.approx(sign * 0.03, abs=0.004)
    lo, hi = comparison["interval"][3]
    assert lo <= comparison["difference"][3] <= hi and (lo > 0 or hi < 0)
    for p in (0, 1, 2, 4, 5):  # label-mix gaps: within the integration error once like for like
        assert abs(comparison["difference"][p]) < 0.005 < raw["max_difference"][p]
    # without an error floor the interval alone decides: the planted gap has evidence, the
    # noise-free label-only position (interval [0, 0]) has none
    bare = like_for_like_differences(attr, group, label, min_group_size=30, seed=0)
    assert bare["comparisons"][0]["evidence"][3] is True
    assert bare["comparisons"][0]["evidence"][5] is False
    assert bare["comparisons"][0]["interval"][5] == pytest.approx([0.0, 0.0], abs=1e-12)
    statement = like["statement"]
    assert "the same predicted label" in statement
    assert "position 3" in statement and "no evidence of a difference" in statement


def test_the_difference_is_the_weighted_within_label_difference_by_hand():
    attr, group, label = _planted(1)
    like = like_for_like_differences(attr, group, label, min_group_size=30, seed=0)
    comparison = like["comparisons"][0]
    g, r = comparison["group"], comparison["reference"]
    total, weights = 0.0, 0.0
    for stratum in ("accept", "reject"):
        in_g, in_r = (group == g) & (label == stratum), (group == r) & (label == stratum)
        w = in_g.sum() * in_r.sum() / (in_g.sum() + in_r.sum())
        total += w * (attr[in_g, 3].mean() - attr[in_r, 3].mean())
        weights += w
    assert comparison["difference"][3] == pytest.approx(total / weights, rel=1e-12)


def test_a_gap_within_the_integration_error_is_no_evidence():
    attr, group, label = _planted()
    like = like_for_like_differences(attr, group, label, min_group_size=30, error_scale=0.05,
                                     condition="predicted_label")
    assert like["comparisons"][0]["evidence"] == [False] * 6
    assert like["top_positions"] == []
    assert "no position shows evidence of a difference" in like["statement"]
    assert "within the integration error (±0.05)" in like["statement"]


def test_small_groups_are_never_compared():
    attr, group, label = _planted()
    group = group.copy()
    group[:5] = "tiny"
    like = like_for_like_differences(attr, group, label, min_group_size=30)
    assert {c["group"] for c in like["comparisons"]} | {like["reference_group"]} == {"a", "b"}
    assert "not compared: tiny" in like["statement"]
    alone = like_for_like_differences(attr[:40], group[:40], label[:40], min_group_size=30)
    assert alone["comparisons"] == [] and alone["statement"].startswith("No group comparison")


# ------------------------------------------------------------------- reports
@pytest.fixture(scope="module")
def sample() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_report_never_calls_an_off_manifold_position_still_its_initial_word(sample):
    result = copy.deepcopy(sample)
    position = result["projection"]["positions"][0]
    position.update({"init_token": "to", "init_token_id": 2000, "init_similarity": 0.221,
                     "still_init": True, "off_manifold": True})
    rows = build_html_context(result)["projection"]["positions"]
    assert rows[0]["drift"] == "off-manifold: no closer to any word than chance"
    assert "still its initial word" not in rows[0]["drift"]
    from promptaudit.projection import format_projection_table

    table = format_projection_table(result["projection"])
    assert " still" not in table.splitlines()[3] and "at chance" in table.splitlines()[3]


def test_report_marks_word_pieces_instead_of_gluing_them(sample):
    result = copy.deepcopy(sample)
    projection = result["projection"]
    projection.pop("projected_words", None)
    first = projection["positions"][0]["neighbors"][0]
    first.update({"token": "##lved", "display": "##lved"})
    first.pop("word", None)
    words = [r["neighbors"][0]["word"] for r in build_html_context(result)["projection"]
             ["positions"]]
    assert words[0] == "\u2026lved"
    page = render_html(result)
    assert "\u2026lved" in page and "##lved" not in page


def test_group_plot_and_sentence_leave_out_small_groups_and_carry_caveats(sample):
    attribution = sample["attribution"]
    assert attribution["by_group"], "the sample result has per-group attribution"
    import html

    page = html.unescape(render_html(sample))
    markdown = render_markdown(sample)
    for feature, block in attribution["by_group"].items():
        like = block["like_for_like"]
        assert like["statement"] in page
        assert like["condition"] == "predicted_label"
        assert f"**Attribution by {feature}:**" in markdown
    # the sample attributes 4 rows: every group is under min_group_size, so none is plotted
    assert all(set(block["small_groups"]) == set(block["counts"])
               for block in attribution["by_group"].values())
    assert "Line chart of the mean attribution per prompt position for each group" not in page


def test_group_chart_never_draws_a_group_below_min_group_size():
    import matplotlib.pyplot as plt

    from promptaudit.report import figures

    block = {"groups": {"a": [0.1, 0.2], "b": [0.0, 0.1], "c": [0.5, -0.5]},
             "counts": {"a": 40, "b": 35, "c": 2}, "small_groups": ["c"], "min_group_size": 30,
             "max_difference": [0.1, 0.1], "top_positions": [0, 1]}
    attribution = {"method": "integrated_gradients", "n_steps": 8, "by_group": {"g": block}}
    figure = figures.group_attribution_chart(attribution)
    drawn = {line.get_label().split(" (n=")[0] for axes in figure.axes
             for line in axes.get_lines() if not line.get_label().startswith("_")}
    plt.close(figure)
    assert drawn == {"a", "b"}
    block["small_groups"] = ["a", "b", "c"]
    with pytest.raises(ValueError):
        figures.group_attribution_chart(attribution)


def test_report_sections_for_departures_and_position_importance(sample):
    page = render_html(sample)
    assert "Where the prompt departs from plain language" in page
    assert "Which positions matter" in page
    departures = sample["projection"]["departures"]
    assert departures["n_departures"] == sum(d["count"] for d in departures["directions"])
    for direction in departures["directions"]:
        assert direction["description"][1:] in page.replace("&#39;", "'")
    markdown = render_markdown(sample)
    assert "### Where the prompt departs from plain language" in markdown
    assert "**Which positions matter:**" in markdown


def test_summary_counts_initial_words_only_where_the_position_is_readable(sample):
    from promptaudit.projection import projection_summary

    projection = copy.deepcopy(sample["projection"])
    for position in projection["positions"]:
        if position.get("still_init") is not None:
            position.update(still_init=True, off_manifold=True)
    summary = projection_summary(projection)
    comparable = sum(p.get("still_init") is not None for p in projection["positions"])
    assert (f"none of the {comparable} positions initialised from a vocabulary word is "
            "readable, so none can be said to keep its initial word") in summary
    assert "are still nearest it" not in summary
