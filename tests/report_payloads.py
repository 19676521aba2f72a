"""Injection payloads planted in the real sample result, for the report escaping tests.

The sample result (``tests/fixtures/sample_result.json``) is written by a real audit and
holds no hostile text; :func:`with_payloads` plants some where a user's text reaches
the reports.
"""

from __future__ import annotations

import copy

SCRIPT = "<script>alert(1)</script>"
ATTR = '"><img src=x onerror=alert(1)>'
MARKDOWN = "**bold** | [link](http://x)"

#: Group names of the real fixture replaced by payloads, everywhere they occur.
PAYLOAD_GROUPS = {"White": ATTR, "Hispanic": MARKDOWN}


def _rename_groups(value, names: dict[str, str]):
    """``value`` with every group name in ``names`` replaced, as a key or a string.

    Intersection groups (``"female & White"``) are renamed part by part, so the
    per-feature, intersection, bias-audit and classification tables stay consistent.
    """
    def rename(text):
        if not isinstance(text, str):
            return text
        return " & ".join(names.get(part, part) for part in text.split(" & "))

    if isinstance(value, dict):
        return {rename(k): _rename_groups(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_groups(v, names) for v in value]
    return rename(value)


def with_payloads(result: dict) -> dict:
    """A deep copy of the real result with SCRIPT/ATTR/MARKDOWN where user text reaches it.

    The audit name, audit_info fields, two sensitive-feature groups (with their
    intersection groups, bias-audit rows and classification reports), an attribution
    example's text and tokens, and a projected neighbour word (with the projected text).
    """
    out = _rename_groups(copy.deepcopy(result), PAYLOAD_GROUPS)
    assert out["fairness"]["by_feature"]["race"]["by_group"][ATTR]  # the fixture has 'White'
    name = f"sample {SCRIPT} {ATTR} {MARKDOWN}"
    out["audit"]["name"] = name
    out["audit"]["spec"]["name"] = name
    info = out["audit"]["audit_info"]
    info["auditor"] = f"auditor {ATTR}"
    info["data_source"] = f"source {SCRIPT}"
    info["test_data_statement"] = f"statement {MARKDOWN}"
    example = out["attribution"]["examples"][1]
    example["text"] = example["text"].replace(" years of experience", f" years {SCRIPT}", 1)
    example["tokens"][13] = SCRIPT
    example["top_tokens"][0]["token"] = SCRIPT
    projection = out["projection"]
    neighbor = projection["positions"][4]["neighbors"][0]
    words = projection["fidelity"]["projected_text"].split()
    assert words[4] == neighbor["token"]
    neighbor["token"] = neighbor["display"] = SCRIPT
    if "word" in neighbor:  # the word as read (issue 23), what the reports show
        neighbor["word"] = SCRIPT
    words[4] = SCRIPT
    projection["fidelity"]["projected_text"] = projection["projected_text"] = " ".join(words)
    if "projected_words" in projection:
        projection["projected_words"] = " ".join(words)
    return out
