"""The official scorer, the paper's pooled groups, and the bootstrap CI, on hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from harness.report.schema import ErrorInfo, SampleRecord
from harness.score.scoring import official_correct, summarize
from harness.score.stats import item_bootstrap


@pytest.mark.parametrize("response, expected", [
    ("E", True),
    ("  E) basophil is shown", True),
    ("E) basophil", True),
    ("The answer is E) basophil.", True),  # substring of the lettered gold option
    ("The answer is E.", False),           # first character is 'T'
    ("e", False),                          # case-sensitive
    ("e) basophil", False),
    ("E)basophil", True),                  # first character still E
    ("basophil", False),
    ("", False),
])
def test_official_check_prediction(response, expected):
    assert official_correct(response, "E", "basophil") is expected


def rec(qt, ds, image, correct, official=None, rule="lone_letter", error=None, n_options=4):
    return SampleRecord(item_id=f"{image}:{qt}", question_type=qt, dataset=ds, image_id=image,
                        correct=correct,
                        correct_official=correct if official is None else official,
                        rule=rule, error=error,
                        options={chr(65 + i): str(i) for i in range(n_options)})


def test_summary_pools_the_papers_groups():
    records = [
        rec("domain", "kather_et_al_2016", "i1", True),
        rec("domain", "kather_et_al_2016", "i2", False, rule="invalid:no_answer"),
        rec("modality", "empiar_sbfsem", "i3", True, official=False, rule="final_answer"),
        rec("modality", "empiar_sbfsem", "i4", True),
        rec("classification", "acevedo_et_al_2020", "i5", True, n_options=6),
        rec("classification", "eulenberg_et_al_2017_darkfield", "i6", True, n_options=6),
        rec("classification", "empiar_sbfsem", "i3", False, n_options=6),
        rec("classification", "empiar_sbfsem", "i7", None,
            error=ErrorInfo("server", "HTTP 500", attempts=6)),
    ]
    s = summarize(records)
    assert summarize(records[::-1]) == s  # the order records arrive in changes nothing
    robust, official = s["scorers"]["robust"], s["scorers"]["official"]
    assert s["n_records"] == 8 and s["n_scored"] == 7 and s["n_errors"] == 1
    assert s["errors_by_type"] == {"server": 1}
    assert robust["coarse"]["accuracy"] == pytest.approx(3 / 4)
    assert official["coarse"]["accuracy"] == pytest.approx(2 / 4)
    # the fine total leaves out eulenberg darkfield: acevedo right, empiar wrong
    assert robust["fine"]["n"] == 2 and robust["fine"]["accuracy"] == pytest.approx(1 / 2)
    assert robust["dataset/eulenberg_et_al_2017_darkfield/fine"]["accuracy"] == 1.0
    assert robust["question_type/modality"]["accuracy"] == 1.0
    assert robust["pathology/coarse"]["accuracy"] == pytest.approx(1 / 2)
    assert robust["pathology/fine"]["accuracy"] == 1.0
    assert robust["coarse"]["chance"] == pytest.approx(1 / 4)
    assert s["invalid_rate"] == pytest.approx(1 / 7)
    assert s["rules"]["final_answer"] == {"n": 1, "accuracy": 1.0}


def test_basic_bootstrap_ci_matches_the_binomial_spread():
    correct = np.array([1] * 600 + [0] * 400)
    ci = item_bootstrap(correct, seed=3, n_resamples=4000)
    se = (0.6 * 0.4 / 1000) ** 0.5
    assert ci["accuracy"] == 0.6
    assert ci["pm"] == pytest.approx(1.96 * se, rel=0.1)
    assert ci["ci_low"] < 0.6 < ci["ci_high"]
    assert item_bootstrap(correct, seed=3) == item_bootstrap(correct, seed=3)  # seeded
