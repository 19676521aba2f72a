"""The words of the report summary say what was actually measured."""

from __future__ import annotations

from promptaudit.report._common import gap_sentences


def _result(source: str) -> dict:
    return {"gates": [], "fairness": {"by_feature": {}, "counterfactual": {
        "flip_rate": 0.25, "n_tuples": 8, "source": source}}}


def test_counterfactual_sentence_names_pairs_when_the_user_gave_pairs():
    (sentence,) = gap_sentences(_result("pair_column:pair_id"))
    assert sentence.startswith(
        "Changing only what differs between rows sharing a 'pair_id' (the user's pairs) "
        "changed the decision for 25.0% of 8 counterfactual tuples")
    assert "names, pronouns" not in sentence


def test_counterfactual_sentence_for_term_suites():
    (builtin,) = gap_sentences(_result("builtin:identity"))
    assert builtin.startswith("Changing only identity terms (names, pronouns, group words) "
                              "changed the decision for 25.0%")
    (own,) = gap_sentences(_result("/data/terms.json"))
    assert own.startswith("Changing only the identity terms of the term suite changed")
