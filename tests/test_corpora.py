"""Tests for promptaudit.corpora: term suites, counterfactual swaps, the screening corpus."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from promptaudit.corpora import (
    BUILTIN_TABLES,
    COUNTERFACTUAL_COLUMNS,
    ERR_UNKNOWN_TABLE,
    SCREENING_LABELS,
    TermSuite,
    generate_screening,
    load_builtin_table,
    load_term_suite,
    make_counterfactuals,
    swap_terms,
)
from promptaudit.corpora.identity import (
    ERR_SUITE_ALIGN,
    ERR_SUITE_FEW_GROUPS,
    ERR_SUITE_MISSING_KEY,
    ERR_SUITE_NOT_FOUND,
    ERR_SUITE_PARSE,
    ERR_SUITE_SUFFIX,
    ERR_SUITE_TARGET_ONLY,
    ERR_SUITE_TYPE,
    ERR_SUITE_UNKNOWN_KEY,
    ERR_TEXT_TYPE,
    ERR_UNKNOWN_BUILTIN_SUITE,
    ERR_UNKNOWN_FEATURE,
)
from promptaudit.corpora.screening import (
    ACCEPT_THRESHOLD,
    ERR_BALANCED_N,
    ERR_BIAS,
    ERR_KIND,
)
from promptaudit.errors import DataError, InputError


@pytest.fixture(scope="module")
def suite() -> TermSuite:
    return load_term_suite("builtin:identity")


def gender(text: str, suite: TermSuite, target: str = "female", source: str = "male") -> str:
    return swap_terms(text, suite, "gender", source, target)


# ------------------------------------------------------------------ the built-in suite


def test_builtin_suite_shape(suite):
    assert list(suite.features) == [
        "gender",
        "race",
        "age",
        "religion",
        "nationality",
        "disability",
    ]
    for feature in suite.features.values():
        lengths = {len(terms) for terms in feature.groups.values()}
        assert len(lengths) == 1, feature.name
        assert len(feature.groups) >= 2
    assert suite.features["gender"].target_only == ("nonbinary",)
    assert list(suite.groups("race")) == ["White", "Black", "Hispanic", "Asian"]
    assert set(suite.groups("religion")) == {
        "Christian",
        "Muslim",
        "Jewish",
        "Hindu",
        "Buddhist",
        "atheist",
    }
    assert load_term_suite("builtin:identity") is suite  # cached


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He said his", "She said her"),
        ("He said his plan was his own.", "She said her plan was her own."),
        ("That book is his, he told himself.", "That book is hers, she told herself."),
        ("HE IS HERE", "SHE IS HERE"),
        ("Theodore shed the theme.", "Theodore shed the theme."),  # whole words only
        ("The man and his son", "The woman and her daughter"),
        ("Mr. Greg Smith's résumé", "Ms. Emily Smith's résumé"),  # aligned White names
        ("He’s here", "She’s here"),  # curly apostrophe kept
    ],
)
def test_male_to_female_swaps(suite, text, expected):
    assert gender(text, suite) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I saw her.", "I saw him."),
        ("Her book is on the table.", "His book is on the table."),
        (
            "I gave her the pen and told her about her new job.",
            "I gave him the pen and told him about his new job.",
        ),
        ("She is a wife and a mother.", "He is a husband and a father."),
    ],
)
def test_female_to_male_resolves_her(suite, text, expected):
    assert gender(text, suite, target="male", source="female") == expected


def test_nonbinary_agreement(suite):
    assert gender("She is sure she works hard.", suite, "nonbinary", "female") == (
        "They are sure they work hard."
    )
    assert gender("He has his own plan and he's been busy.", suite, "nonbinary") == (
        "They have their own plan and they've been busy."
    )


def test_article_and_case_rules(suite):
    assert swap_terms("A young atheist.", suite, "age", "young", "old") == "An elderly atheist."
    assert swap_terms("an atheist", suite, "religion", "atheist", "Muslim") == "a Muslim"
    # Proper nouns written as listed keep the target's own spelling mid-sentence.
    assert swap_terms("She lives in Syria.", suite, "nationality", "Syrian", "American") == (
        "She lives in the United States."
    )
    assert swap_terms("Mexico is big.", suite, "nationality", "Mexican", "American") == (
        "The United States is big."
    )
    assert (
        swap_terms(
            "A person who uses a wheelchair", suite, "disability", "disabled", "non-disabled"
        )
        == "A person who does not use a wheelchair"
    )


def test_race_swaps_keep_name_gender(suite):
    race = suite.features["race"]
    assert race.roles is not None
    white, black = race.groups["White"], race.groups["Black"]
    for index, name in enumerate(white):
        swapped = swap_terms(f"{name}'s file", suite, "race", "White", "Black")
        assert swapped == f"{black[index]}'s file"
        assert race.roles[index] in ("female_name", "male_name")


# ------------------------------------------------------------------ make_counterfactuals


def test_make_counterfactuals_tuples(suite):
    texts = [
        "He said his plan works.",  # gender tuple
        "The weather is nice.",  # no identity term: nothing
        "He told her the news.",  # he + her: ambiguous gender, skipped
        "Jamal is a young engineer.",  # race and age (Jamal is male: gender too)
    ]
    frame = make_counterfactuals(texts, suite)
    assert list(frame.columns) == list(COUNTERFACTUAL_COLUMNS)
    assert set(frame["source_index"]) == {0, 3}
    first = frame[frame["tuple_id"] == 0]
    assert first["text"].tolist() == [
        "He said his plan works.",
        "She said her plan works.",
        "They said their plan works.",
    ]
    assert first["group"].tolist() == ["male", "female", "nonbinary"]
    assert first["is_original"].tolist() == [True, False, False]
    assert set(frame.loc[frame["source_index"] == 3, "feature"]) == {"gender", "race", "age"}
    race = frame[(frame["source_index"] == 3) & (frame["feature"] == "race")]
    assert race["group"].tolist() == ["Black", "White", "Hispanic", "Asian"]
    assert race["text"].iloc[1] == "Brett is a young engineer."
    for _, rows in frame.groupby("tuple_id"):
        assert rows["is_original"].iloc[0] and not rows["is_original"].iloc[1:].any()
        assert rows["source_index"].nunique() == 1 and rows["feature"].nunique() == 1
    assert frame["tuple_id"].tolist() == sorted(frame["tuple_id"])


def test_make_counterfactuals_features_and_errors(suite):
    frame = make_counterfactuals(["Jamal is a young engineer."], suite, features=["age"])
    assert frame["text"].tolist() == ["Jamal is a young engineer.", "Jamal is an elderly engineer."]
    empty = make_counterfactuals(["nothing here"], "builtin:identity")
    assert list(empty.columns) == list(COUNTERFACTUAL_COLUMNS) and len(empty) == 0
    with pytest.raises(InputError) as err:
        make_counterfactuals(["x"], suite, features=["height"])
    assert str(err.value) == ERR_UNKNOWN_FEATURE.format(
        feature="height", allowed="gender, race, age, religion, nationality, disability"
    )
    with pytest.raises(InputError) as err:
        make_counterfactuals(["ok", None], suite)
    assert str(err.value) == ERR_TEXT_TYPE.format(row=1, value=None)


def test_every_screening_text_gets_a_gender_tuple(suite):
    frame = generate_screening(40, seed=5)
    tuples = make_counterfactuals(frame["text"], suite, features=["gender", "race"])
    originals = tuples[tuples["is_original"]]
    by_feature = originals.groupby("feature")["source_index"].apply(set)
    assert by_feature["gender"] == set(range(40))
    assert by_feature["race"] == set(range(40))
    merged = originals.merge(frame, left_on="source_index", right_index=True)
    gender_rows = merged[merged["feature"] == "gender"]
    assert (gender_rows["group"] == gender_rows["gender"]).all()
    race_rows = merged[merged["feature"] == "race"]
    assert (race_rows["group"] == race_rows["race"]).all()


# ------------------------------------------------------------------ user suites


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_user_suite_yaml_and_json(tmp_path):
    yaml_path = _write(
        tmp_path,
        "terms.yaml",
        "features:\n  pet:\n    groups:\n      cat: [cat, kitten]\n      dog: [dog, puppy]\n",
    )
    suite = load_term_suite(yaml_path)
    assert suite.name == str(yaml_path)
    assert swap_terms("A Kitten and a cat", suite, "pet", "cat", "dog") == "A Puppy and a dog"
    json_path = _write(
        tmp_path,
        "terms.json",
        {
            "features": {
                "pet": {
                    "groups": {"cat": ["cat"], "dog": ["dog"], "owl": ["owl"]},
                    "target_only": ["owl"],
                }
            }
        },
    )
    frame = make_counterfactuals(["my owl", "my cat"], load_term_suite(str(json_path)))
    assert frame["text"].tolist() == ["my cat", "my dog", "my owl"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"terms": {}},
            ERR_SUITE_UNKNOWN_KEY.format(
                path="{path}", key="terms", allowed="name, version, description, features"
            ),
        ),
        ({"name": "x"}, ERR_SUITE_MISSING_KEY.format(path="{path}", key="features")),
        (
            {"features": []},
            ERR_SUITE_TYPE.format(
                path="{path}", key="features", expected="a mapping", got="an empty list"
            ),
        ),
        (
            {"features": {"pet": {"groups": {"cat": ["cat"]}}}},
            ERR_SUITE_FEW_GROUPS.format(path="{path}", key="features.pet.groups", count=1),
        ),
        (
            {"features": {"pet": {"groups": {"cat": ["cat", "kitten"], "dog": ["dog"]}}}},
            ERR_SUITE_ALIGN.format(
                path="{path}",
                key="features.pet.groups.dog",
                got=1,
                first="features.pet.groups.cat",
                expected=2,
            ),
        ),
        (
            {"features": {"pet": {"groups": {"cat": ["cat"], "dog": [""]}}}},
            ERR_SUITE_TYPE.format(
                path="{path}",
                key="features.pet.groups.dog",
                expected="a non-empty list of non-empty strings",
                got="a list with a non-string or empty item",
            ),
        ),
        (
            {"features": {"pet": {"groups": {"cat": ["cat"], "dog": ["dog"]}, "colour": 1}}},
            ERR_SUITE_UNKNOWN_KEY.format(
                path="{path}", key="features.pet.colour", allowed="groups, roles, target_only"
            ),
        ),
        (
            {
                "features": {
                    "pet": {"groups": {"cat": ["cat"], "dog": ["dog"]}, "target_only": ["owl"]}
                }
            },
            ERR_SUITE_TARGET_ONLY.format(
                path="{path}", key="features.pet.target_only", group="owl", groups="cat, dog"
            ),
        ),
    ],
)
def test_user_suite_shape_errors(tmp_path, content, message):
    path = _write(tmp_path, "bad.json", content)
    with pytest.raises(DataError) as err:
        load_term_suite(path)
    assert str(err.value) == message.format(path=path)


def test_user_suite_file_errors(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DataError) as err:
        load_term_suite(missing)
    assert str(err.value) == ERR_SUITE_NOT_FOUND.format(path=missing)
    txt = _write(tmp_path, "terms.txt", "he she")
    with pytest.raises(DataError) as err:
        load_term_suite(txt)
    assert str(err.value) == ERR_SUITE_SUFFIX.format(path=txt, suffix=".txt")
    unsafe = _write(tmp_path, "unsafe.yaml", "features: !!python/object/apply:os.system [ls]\n")
    with pytest.raises(DataError) as err:
        load_term_suite(unsafe)
    assert str(err.value).startswith(ERR_SUITE_PARSE.format(path=unsafe, kind="YAML", reason=""))
    assert "\n" not in str(err.value)
    with pytest.raises(DataError) as err:
        load_term_suite("builtin:slurs")
    assert str(err.value) == ERR_UNKNOWN_BUILTIN_SUITE.format(reference="builtin:slurs")


# ------------------------------------------------------------------ screening corpus


def test_screening_label_rule():
    frame = generate_screening(500, seed=11)
    degree_points = frame["degree"].map({"none": 0, "bachelor": 3, "master": 5})
    points = (
        frame["years_experience"].clip(upper=10)
        + degree_points
        + 2 * frame["certified"].astype(int)
        + frame["references"]
    )
    assert (points == frame["points"]).all()
    expected = np.where(points >= ACCEPT_THRESHOLD, "accept", "reject")
    assert (frame["true_label"] == expected).all()
    assert (frame["label"] == frame["true_label"]).all()  # no bias by default
    assert set(frame["label"]) == set(SCREENING_LABELS) == {"reject", "accept"}
    assert 0.35 < (frame["label"] == "accept").mean() < 0.65
    assert frame["pair_id"].tolist() == list(range(500))


def test_screening_text_signals_gender_and_race(suite):
    frame = generate_screening(200, seed=2)
    for row in frame.itertuples():
        words = set(row.text.replace(".", " ").replace(",", " ").replace(";", " ").lower().split())
        if row.gender == "female":
            assert "she" in words and not {"he", "his"} & words
        else:
            assert "he" in words and not {"she", "her"} & words
        assert row.name in row.text
        assert row.name in suite.groups("race")[row.race]
        assert f"{row.years_experience} year" in row.text


def test_screening_is_deterministic_and_seeded():
    first = generate_screening(300, seed=4)
    assert first.equals(generate_screening(300, seed=4))
    assert not first["text"].equals(generate_screening(300, seed=5)["text"])


def test_bias_flips_only_the_biased_groups_accepts():
    clean = generate_screening(4000, seed=9)
    biased = generate_screening(4000, seed=9, bias=0.3)
    assert biased["text"].equals(clean["text"])
    assert biased["true_label"].equals(clean["true_label"])
    flipped = biased["label"] != biased["true_label"]
    assert not flipped[biased["gender"] == "male"].any()
    assert (biased.loc[flipped, "true_label"] == "accept").all()
    assert (biased.loc[flipped, "label"] == "reject").all()
    eligible = (biased["gender"] == "female") & (biased["true_label"] == "accept")
    rate = flipped[eligible].mean()
    standard_error = np.sqrt(0.3 * 0.7 / eligible.sum())
    assert abs(rate - 0.3) < 4 * standard_error
    by_race = generate_screening(4000, seed=9, bias=0.5, biased_group=("race", "Black"))
    flipped = by_race["label"] != by_race["true_label"]
    assert set(by_race.loc[flipped, "race"]) == {"Black"}


def test_screening_pairs_and_balance():
    pairs = generate_screening(100, seed=3, with_pairs=True)
    assert len(pairs) == 200
    qualifications = ["years_experience", "degree", "certified", "references", "true_label"]
    for _, twins in pairs.groupby("pair_id"):
        assert len(twins) == 2
        assert (twins[qualifications].nunique() == 1).all()
        assert twins["gender"].nunique() == 2 and twins["race"].nunique() == 2
    balanced = generate_screening(160, seed=3, balanced=True)
    cells = balanced.groupby(["gender", "race"]).size()
    assert (cells == 20).all() and len(cells) == 8
    accept = balanced["true_label"] == "accept"
    for column in ("gender", "race"):
        assert accept.groupby(balanced[column]).mean().nunique() == 1


def test_loan_kind():
    frame = generate_screening(50, seed=1, kind="loan")
    assert {"years_employed", "income", "on_time_history", "guarantors"} <= set(frame.columns)
    assert frame["text"].str.contains("loan|credit", case=False).all()


def test_screening_errors():
    with pytest.raises(InputError) as err:
        generate_screening(10, kind="lease")
    assert str(err.value) == ERR_KIND.format(kind="lease")
    with pytest.raises(InputError) as err:
        generate_screening(10, bias=1.5)
    assert str(err.value) == ERR_BIAS.format(bias=1.5)
    with pytest.raises(InputError) as err:
        generate_screening(10, balanced=True)
    assert str(err.value) == ERR_BALANCED_N.format(n=10)
    with pytest.raises(InputError):
        generate_screening(10, biased_group=("gender", "other"))


def test_screening_generation_is_fast():
    generate_screening(10)
    start = time.perf_counter()
    generate_screening(1000, seed=1)
    assert time.perf_counter() - start < 0.25  # about 0.05 s on a laptop core


# ------------------------------------------------------------------ builtin tables


def test_builtin_tables():
    shapes = {
        "screening": 600,
        "screening-train": 2000,
        "screening-train-biased": 2000,
        "screening-pairs": 600,
    }
    assert set(BUILTIN_TABLES) == set(shapes)
    tables = {name: load_builtin_table(name) for name in shapes}
    for name, frame in tables.items():
        assert len(frame) == shapes[name]
        assert {"text", "label", "gender", "race", "pair_id", "true_label"} <= set(frame.columns)
    train, biased = tables["screening-train"], tables["screening-train-biased"]
    assert train["text"].equals(biased["text"])
    assert (train["label"] == train["true_label"]).all()
    assert (biased["label"] != biased["true_label"]).any()
    assert tables["screening"]["text"].tolist()[:50] != train["text"].tolist()[:50]
    assert tables["screening"].groupby(["gender", "race"]).size().eq(75).all()
    assert tables["screening-pairs"]["pair_id"].value_counts().eq(2).all()
    assert (
        load_builtin_table("screening", seed=1)["text"].tolist()
        != tables["screening"]["text"].tolist()
    )


def test_unknown_builtin_table():
    with pytest.raises(DataError) as err:
        load_builtin_table("credit")
    assert str(err.value) == ERR_UNKNOWN_TABLE.format(
        name="credit", available=", ".join(BUILTIN_TABLES)
    )


def test_load_table_reads_builtin_screening():
    from promptaudit.data import load_table

    frame = load_table("builtin:screening", required_columns=["text", "label", "gender", "race"])
    assert len(frame) == 600
