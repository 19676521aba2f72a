"""``promptaudit trend``: bias-audit figures across audit periods (issue 25, item 4).

Three periods of one audit with a planted drift (the female impact ratio 0.80 -> 0.78
-> 0.60): the crossing of the four-fifths line and the large move are flagged and the
command exits 1; a stable set exits 0; a mixed set (another audit, other labels, no
period, overlapping periods) exits 2 naming the file. Intervals against statsmodels'
Wilson interval and the Katz formula by hand; the HTML is self-contained with one chart
per table.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from promptaudit.bias_audit import compute_bias_audit
from promptaudit.cli import app
from promptaudit.errors import InputError
from promptaudit.result import content_sha256
from promptaudit.stats import katz_interval, wilson_interval
from promptaudit.trend import compute_trend

FIXTURE = Path(__file__).parent / "fixtures" / "sample_result.json"
Z95 = 1.959963984540054


def period_result(start: str, end: str, female: int, male: int = 50, *, n: int = 100,
                  name: str = "screening") -> dict:
    """The sample result with its bias audit replaced by female ``female``/n against
    male ``male``/n selected, on data of the period ``start``..``end``."""
    result = json.loads(FIXTURE.read_text(encoding="utf-8"))
    frame = pd.DataFrame({"gender": ["female"] * n + ["male"] * n})
    selected = np.array([True] * female + [False] * (n - female) + [True] * male
                        + [False] * (n - male))
    result["bias_audit"] = compute_bias_audit(frame, selected=selected, exclude_below=0.02)
    result["audit"]["name"] = name
    result["audit"]["audit_info"] = {"date": end, "data_start": start, "data_end": end}
    result["provenance"]["data"] = {"source": f"applicants-{start}.csv", "generated": False,
                                    "sha256": f"{hash(start) & 0xFFFF:064x}", "n_rows": 2 * n}
    return result


def write(tmp_path: Path, name: str, result: dict) -> Path:
    result = copy.deepcopy(result)
    result["integrity"] = {"algorithm": "sha256", "content_sha256": content_sha256(result)}
    path = tmp_path / name
    path.write_text(json.dumps(result), encoding="utf-8")
    return path


@pytest.fixture()
def drifting() -> list[dict]:
    return [period_result("2024-01-01", "2024-12-31", 40),   # IR 0.80: at the line
            period_result("2025-01-01", "2025-12-31", 39),   # 0.78: below (moved 0.02)
            period_result("2026-01-01", "2026-12-31", 30)]   # 0.60: moved 0.18


def test_three_periods_flag_the_planted_drift(tmp_path, drifting):
    # given out of order: the periods are sorted by data_start
    paths = [write(tmp_path, f"r{i}.json", r) for i, r in enumerate(drifting)]
    run = CliRunner().invoke(app, ["trend", str(paths[2]), str(paths[0]), str(paths[1]),
                                   "--out", str(tmp_path / "trend")])
    assert run.exit_code == 1, run.output
    trend = json.loads((tmp_path / "trend" / "trend.json").read_text())
    assert [p["data_start"] for p in trend["periods"]] == ["2024-01-01", "2025-01-01",
                                                            "2026-01-01"]
    female = trend["tables"]["gender"]["female"]
    assert [round(p["impact_ratio"], 6) for p in female] == [0.8, 0.78, 0.6]
    flags = [(f["group"], f["kind"], f["from"][:4], f["to"][:4]) for f in trend["flags"]]
    assert flags == [("female", "crossed_below", "2024", "2025"),
                     ("female", "moved", "2025", "2026")]
    assert "FLAGGED: 2 changes" in run.output
    page = (tmp_path / "trend" / "trend.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 1  # one chart per table
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_a_stable_set_exits_0_and_the_alert_is_honoured(tmp_path):
    results = [period_result("2024-01-01", "2024-06-30", 45),
               period_result("2024-07-01", "2024-12-31", 46),
               period_result("2025-01-01", "2025-06-30", 44)]
    paths = [str(write(tmp_path, f"r{i}.json", r)) for i, r in enumerate(results)]
    run = CliRunner().invoke(app, ["trend", *paths])
    assert run.exit_code == 0, run.output
    assert "No category crossed" in run.output
    # a tighter alert flags the 0.02 moves
    trend = compute_trend(results, drift_alert=0.01)
    assert [f["kind"] for f in trend["flags"]] == ["moved", "moved"]


def test_intervals_equal_statsmodels_wilson_and_katz_by_hand(drifting):
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    trend = compute_trend(drifting)
    point = trend["tables"]["gender"]["female"][2]  # 30 of 100 against 50 of 100
    low, high = proportion.proportion_confint(30, 100, alpha=0.05, method="wilson")
    assert point["rate_interval"] == pytest.approx([low, high], rel=1e-9)
    se = math.sqrt(1 / 30 - 1 / 100 + 1 / 50 - 1 / 100)
    assert point["impact_ratio_interval"] == pytest.approx(
        [0.6 * math.exp(-Z95 * se), 0.6 * math.exp(Z95 * se)], rel=1e-9)
    assert trend["tables"]["gender"]["male"][2]["impact_ratio_interval"] is None  # reference
    assert katz_interval(0, 10, 5, 10, Z95) is None and wilson_interval(0, 0, z=Z95) is None


@pytest.mark.parametrize("case, expected", [
    ("other_audit", "is audit 'another', but"),
    ("other_labels", "not measured like"),
    ("no_period", "audit.audit_info.data_start is missing"),
    ("overlap", "overlaps"),
    ("other_threshold", "bias_audit.threshold is 0.9"),
    ("one_file", "at least two result files"),
])
def test_a_mixed_set_is_refused_with_exit_2(tmp_path, drifting, case, expected):
    results = copy.deepcopy(drifting)
    odd = results[1]
    if case == "other_audit":
        odd["audit"]["name"] = "another"
    elif case == "other_labels":
        odd["task"]["labels"] = ["accept", "reject"]
    elif case == "no_period":
        del odd["audit"]["audit_info"]["data_start"]
    elif case == "overlap":
        odd["audit"]["audit_info"]["data_start"] = "2024-12-01"
    elif case == "other_threshold":
        odd["bias_audit"]["threshold"] = 0.9
    else:
        results = results[:1]
    paths = [str(write(tmp_path, f"r{i}.json", r)) for i, r in enumerate(results)]
    run = CliRunner().invoke(app, ["trend", *paths, "--out", str(tmp_path / "out")])
    assert run.exit_code == 2, run.output
    assert expected in run.output and "Traceback" not in run.output
    assert not (tmp_path / "out").exists()


def test_bad_alert_and_output_over_an_input_are_refused(tmp_path, drifting):
    with pytest.raises(InputError, match=r"--drift-alert: 1\.5 is not allowed"):
        compute_trend(drifting, drift_alert=1.5)
    paths = [write(tmp_path, f"r{i}.json", r) for i, r in enumerate(drifting)]
    shutil_target = tmp_path / "trend.json"
    paths[0].rename(shutil_target)
    before = shutil_target.read_bytes()
    run = CliRunner().invoke(app, ["trend", str(shutil_target), str(paths[1]), str(paths[2]),
                                   "--out", str(tmp_path)])
    assert run.exit_code == 2 and "would overwrite an input" in run.output
    assert shutil_target.read_bytes() == before


def test_spec_audit_info_takes_validated_period_dates():
    from promptaudit.errors import SpecError
    from promptaudit.spec import parse_spec

    base = {"name": "t", "model": {"base": "builtin:minilm"}, "prompt": {"path": "p"},
            "data": {"path": "d.csv", "sensitive_features": ["gender"]}}
    import datetime

    spec = parse_spec({**base, "audit_info": {"data_start": datetime.date(2026, 1, 1),
                                              "data_end": "2026-03-31"}})
    assert spec.audit_info.data_start == "2026-01-01" and spec.audit_info.data_end == "2026-03-31"
    with pytest.raises(SpecError, match="data_start"):
        parse_spec({**base, "audit_info": {"data_start": "2026-13-01"}})
    with pytest.raises(SpecError, match="after data_end"):
        parse_spec({**base, "audit_info": {"data_start": "2026-05-01", "data_end": "2026-04-01"}})


def test_every_file_trend_writes_was_declared(tmp_path, drifting):
    """`trend --out` writes exactly the files `paths.plan_trend` declares (and checked)."""
    from promptaudit.paths import OutputKind, plan_trend

    paths = [write(tmp_path, f"r{i}.json", r) for i, r in enumerate(drifting)]
    out = tmp_path / "trend"
    run = CliRunner().invoke(app, ["trend", *map(str, paths), "--out", str(out)])
    assert run.exit_code == 1, run.output
    declared = {o.path for o in plan_trend(paths, out).outputs if o.kind is OutputKind.FILE}
    assert set(out.iterdir()) == declared


def test_trend_out_over_a_result_is_refused_before_any_work(tmp_path, drifting):
    """A result named trend.json inside --out would be replaced: exit 2 naming both."""
    out = tmp_path / "trend"
    out.mkdir()
    paths = [write(tmp_path, f"r{i}.json", r) for i, r in enumerate(drifting[:2])]
    victim = out / "trend.json"
    victim.write_text(paths[0].read_text())
    run = CliRunner().invoke(app, ["trend", str(victim), str(paths[1]), "--out", str(out)])
    assert run.exit_code == 2, run.output
    assert "trend.json" in run.output and "result 1" in run.output
    assert victim.read_text() == paths[0].read_text()
