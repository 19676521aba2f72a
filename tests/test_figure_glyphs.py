"""Figures draw any group name without matplotlib's missing-glyph warnings."""

from __future__ import annotations

import warnings

from promptaudit.report import figures


def test_a_group_name_outside_the_font_is_drawn_without_a_glyph_warning():
    fairness = {"by_feature": {"gender": {
        "by_group": {"wom\U0001F469n": {"selection_rate": 0.4, "count": 40},
                     "\u7537": {"selection_rate": 0.6, "count": 50}},
        "intervals": {}, "small_groups": []}}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = figures.group_metric_chart(fairness, "gender")
        figures.figure_to_data_uri(figure)  # drawing is where matplotlib warns
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert any(label.startswith("wom?n") for label in labels), labels


def test_drawable_keeps_what_the_font_has():
    assert figures.drawable("Jos\u00e9 & Zo\u00eb <b>") == "Jos\u00e9 & Zo\u00eb <b>"
    assert figures.drawable("\U0001F469 at \U0001F4BB") == "? at ?"
