"""Bootstrap CIs, the paired test and Holm's correction against hand-computed values."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from harness.report.schema import SampleRecord
from harness.score.scoring import summarize
from harness.score.stats import (
    cluster_bootstrap,
    holm,
    image_resamples,
    item_bootstrap,
    paired_test,
)


def test_cluster_bootstrap_by_hand_is_wider_than_the_item_bootstrap():
    # Image A has one question (right), image B three (all wrong): mean 1/4.
    # Resampling 2 images: AA → 1 (p ¼), AB → ¼ (p ½), BB → 0 (p ¼); quantiles 0 and 1, so the
    # percentile CI is [0, 1] (the basic one, [2·¼ − 1, 2·¼ − 0] = [−½, ½], would leave [0, 1]).
    values, images = np.array([1, 0, 0, 0]), np.array(["A", "B", "B", "B"])
    clustered = cluster_bootstrap(values, images, seed=0)
    assert clustered["mean"] == 0.25 and clustered["n_clusters"] == 2
    assert clustered["ci_low"] == pytest.approx(0.0) and clustered["ci_high"] == pytest.approx(1.0)
    # Items alone: Binomial(4, ¼)/4 has quantiles 0 and ¾, so [−¼, ½]: narrower.
    items = item_bootstrap(values, seed=0)
    assert items["ci_low"] == pytest.approx(-0.25) and items["ci_high"] == pytest.approx(0.5)


def test_clustering_widens_the_ci_by_the_square_root_of_the_cluster_size():
    # 400 images, 5 questions each, answered all right or all wrong: the information is that of
    # 400 independent answers, not 2,000, so the honest interval is √5 times wider.
    rng = np.random.default_rng(0)
    per_image = rng.random(400) < 0.6
    values = np.repeat(per_image, 5).astype(float)
    images = np.repeat(np.arange(400), 5)
    clustered = cluster_bootstrap(values, images, n_resamples=4000, seed=1)
    items = item_bootstrap(values, n_resamples=4000, seed=1)
    width = clustered["ci_high"] - clustered["ci_low"]
    assert width / (items["ci_high"] - items["ci_low"]) == pytest.approx(5 ** 0.5, rel=0.12)
    # when every image has one question the two bootstraps agree
    single = cluster_bootstrap(values[::5], images[::5], n_resamples=4000, seed=1)
    one = item_bootstrap(values[::5], n_resamples=4000)
    assert single["ci_high"] - single["ci_low"] == pytest.approx(one["ci_high"] - one["ci_low"],
                                                                 rel=0.12)


def test_cluster_bootstrap_matches_naive_resampling_of_images():
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 7, size=300)
    images = np.repeat(np.arange(300), sizes)
    values = (rng.random(images.size) < 0.4).astype(float)
    fast = cluster_bootstrap(values, images, n_resamples=4000, seed=2)
    # the textbook way: draw 300 image indices with replacement, pool their questions
    sums, counts = np.bincount(images, weights=values), np.bincount(images)
    picks = rng.integers(0, 300, size=(4000, 300))
    naive = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    lo, hi = np.quantile(naive, [0.025, 0.975])
    assert fast["ci_low"] == pytest.approx(lo, abs=0.01)
    assert fast["ci_high"] == pytest.approx(hi, abs=0.01)
    assert cluster_bootstrap(values, images, seed=9) == cluster_bootstrap(values, images, seed=9)


def test_image_resamples_draw_the_same_images_however_they_are_chunked():
    # the calibration CIs bound their memory by chunking; the spread and the accuracy CI do not:
    # with one seed all of them must see the same resamples
    def draws(row_cells):
        rng = np.random.default_rng(4)
        return np.concatenate(list(image_resamples(rng, np.ones(50, dtype=int), 1000,
                                                   row_cells=row_cells)))
    whole, chunked = draws(1), draws(2_000_000 // 7)  # one chunk; chunks of 7 rows
    assert whole.shape == (1000, 50) and (whole.sum(axis=1) == 50).all()
    assert np.array_equal(whole, chunked)
    # pooled groups of interchangeable images draw k images in all, in proportion to their size
    grouped = np.concatenate(list(image_resamples(np.random.default_rng(4), np.array([10, 40]),
                                                  4000, row_cells=2)))
    assert (grouped.sum(axis=1) == 50).all()
    assert grouped[:, 0].mean() == pytest.approx(10, rel=0.05)


def test_paired_test_is_mcnemars_exact_test_with_one_question_per_image():
    # b = 1 item only A got right, c = 8 only B got right, 5 both right:
    # p = 2 · P(Binomial(9, ½) ≤ 1) = 2 · (1 + 9) / 512
    a = np.array([1] + [0] * 8 + [1] * 5)
    b = np.array([0] + [1] * 8 + [1] * 5)
    assert paired_test(a, b, np.arange(14)) == pytest.approx(20 / 512)
    assert paired_test(b, a, np.arange(14)) == pytest.approx(20 / 512)
    assert paired_test(a, a, np.arange(14)) == 1.0
    assert paired_test([1, 0], [0, 1], [0, 1]) == 1.0  # b = c


def test_paired_test_swaps_whole_images():
    # 3 images × 5 questions, A right on all 15 and B wrong on all: McNemar on questions would
    # give 2 / 2^15, but only the 2^3 swaps of whole images are exchangeable: p = 2/8.
    a, b = np.ones(15), np.zeros(15)
    images = np.repeat([0, 1, 2], 5)
    assert paired_test(a, b, images) == pytest.approx(0.25)
    assert paired_test(a, b, np.arange(15)) == pytest.approx(2 / 2 ** 15)


def test_paired_test_equals_the_full_enumeration_of_swaps():
    rng = np.random.default_rng(1)
    images = np.repeat(np.arange(10), [1, 2, 3, 5, 1, 2, 3, 4, 5, 6])
    a = rng.random(images.size) < 0.7
    b = rng.random(images.size) < 0.4
    d = np.bincount(images, weights=a.astype(int) - b.astype(int))
    extreme = [abs(np.dot(signs, d)) >= abs(d.sum()) - 1e-9
               for signs in itertools.product([1, -1], repeat=10)]
    assert paired_test(a, b, images) == pytest.approx(np.mean(extreme))


def test_holm_by_hand():
    # sorted: .005·4 = .02, .01·3 = .03, .03·2 = .06, .04·1 = .04 → kept monotone: .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def _record(item, image, correct, n_options=3, rotation=None, gold="A", extracted="A"):
    return SampleRecord(item_id=item, image_id=image, dataset="kather_et_al_2016",
                        question_type="domain",
                        options={"ABCDEFGH"[i]: str(i) for i in range(n_options)},
                        gold=gold, extracted=extracted, rule="lone_letter", correct=correct,
                        correct_official=correct, rotation=rotation)


def test_summary_reports_both_cis_and_chance_for_the_item_mix():
    records = [_record(f"i{n}", f"img{n // 2}", n % 3 == 0, n_options=2 + n % 2) for n in range(8)]
    coarse = summarize(records)["scorers"]["robust"]["coarse"]
    assert coarse["chance"] == pytest.approx(np.mean([1 / (2 + n % 2) for n in range(8)]))
    assert coarse["accuracy"] == pytest.approx(3 / 8)
    assert {"ci_low", "ci_high", "pm", "cluster_ci_low", "cluster_ci_high",
            "cluster_ci_method"} <= set(coarse)


def test_circular_summary_needs_every_rotation_right():
    records = []
    for k in range(3):  # item x: all three rotations right; item y: rotation 2 wrong
        records.append(_record(f"x:domain#r{k}", "img1", True, rotation=k))
        records.append(_record(f"y:domain#r{k}", "img2", k != 2, rotation=k,
                               extracted="B" if k == 2 else "A"))
    records.append(_record("z:domain#r0", "img3", True, rotation=0))  # rotations 1, 2 missing
    summary = summarize(records)
    circular = summary["circular"]
    assert circular["n_items"] == 2 and circular["n_incomplete"] == 1
    assert circular["scorers"]["robust"]["coarse"]["accuracy"] == 0.5
    assert circular["scorers"]["robust"]["coarse"]["chance"] == pytest.approx((1 / 3) ** 3)
    assert circular["per_rotation"] == {"0": {"n": 3, "accuracy": 1.0},
                                        "1": {"n": 2, "accuracy": 1.0},
                                        "2": {"n": 2, "accuracy": 0.5}}
    # gold was always "A"; the letter-bias table counts what was predicted, and how well
    bias = summary["letter_bias"]["letters"]
    assert bias["A"] == {"gold": 7, "predicted": 6, "correct": 6}
    assert bias["B"] == {"gold": 0, "predicted": 1, "correct": 0}


def test_only_the_papers_interval_leaves_0_1_on_small_groups():
    # The example: a group of 6 questions at 16.7%. The paper's basic interval goes below
    # zero (kept as the paper computes it); every other interval stays inside [0, 1].
    values = np.array([1, 0, 0, 0, 0, 0])
    paper = item_bootstrap(values, seed=0)
    assert paper["ci_low"] < 0
    stat = summarize([_record(f"i{n}", f"img{n}", bool(v)) for n, v in enumerate(values)]
                     )["scorers"]["robust"]["coarse"]
    assert stat["ci_low"] == paper["ci_low"] and stat["pm"] == paper["pm"]
    assert stat["cluster_ci_method"] == "wilson"
    assert 0 <= stat["cluster_ci_low"] < 1 / 6 < stat["cluster_ci_high"] <= 1
    # all wrong or all right: Wilson's interval is not empty, and still inside [0, 1]
    for outcome in (0, 1):
        s = summarize([_record(f"i{n}", f"img{n}", bool(outcome)) for n in range(6)]
                      )["scorers"]["robust"]["coarse"]
        assert 0 <= s["cluster_ci_low"] < s["cluster_ci_high"] <= 1
    # many small random groups, clustered or not: the percentile interval never leaves [0, 1]
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        v, img = rng.random(n) < rng.random(), rng.integers(0, max(1, n // 2), size=n)
        ci = cluster_bootstrap(v, img, seed=1)
        assert 0 <= ci["ci_low"] <= ci["mean"] <= ci["ci_high"] <= 1


def test_wilson_interval_by_hand():
    from harness.score.stats import wilson_interval
    # 1 of 6: p = 1/6, z = 1.95996; centre (p + z²/12)/(1 + z²/6), as in any textbook table
    low, high = wilson_interval(1, 6)
    assert (round(low, 4), round(high, 4)) == (0.0301, 0.5635)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
