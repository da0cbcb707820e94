"""Known answers for the report's intervals and the margin of its verdicts."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from advfeatures.errors import ConfigError
from advfeatures.experiments.stats import Z95, judge, mean_std, summary, wilson_interval

Z2 = Z95**2


def test_wilson_known_answers():
    # k = 0 and k = n have closed forms: [0, z²/(n+z²)] and [n/(n+z²), 1]
    assert wilson_interval(0, 10) == (0.0, pytest.approx(Z2 / (10 + Z2)))
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + Z2)), 1.0)
    # symmetric about 1/2 at k = n/2: centre exactly 0.5, half-width z·√(1/(4n) + z²/(4n²)) / (1 + z²/n)
    lo, hi = wilson_interval(5, 10)
    half = Z95 * math.sqrt(0.25 / 10 + Z2 / 400) / (1 + Z2 / 10)
    assert (lo, hi) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)  # the textbook value for 5/10


@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_estimate_and_stays_in_the_unit_interval(kn):
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_narrows_with_more_images():
    widths = [hi - lo for lo, hi in (wilson_interval(n // 4, n) for n in (40, 400, 4000))]
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] / widths[2] == pytest.approx(math.sqrt(10), rel=0.02)  # ~1/√n for large n


def test_wilson_refuses_impossible_counts():
    for k, n in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ConfigError, match="0 ≤ k ≤ n"):
            wilson_interval(k, n)


def test_mean_std_known_answers():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([0.4]) == (0.4, 0.0)
    s = summary([0.5, 0.6], [100, 100])
    assert s["mean"] == pytest.approx(0.55) and s["std"] == pytest.approx(math.sqrt(0.005))
    assert s["pooled_interval"] == list(wilson_interval(110, 200)) and s["images"] == 200


def test_a_difference_inside_the_noise_is_not_shown():
    # 30% vs 28% on 360 images: SE = √(.3·.7/360 + .28·.72/360) ≈ 3.4 points, so 2 points is noise
    v = judge([(1.0, "a"), (-1.0, "b")], [{"a": 0.30, "b": 0.28}], [360])
    assert v["verdict"] == "not shown" and not v["holds"]
    assert v["standard_error"] == pytest.approx(math.sqrt((0.3 * 0.7 + 0.28 * 0.72) / 360))
    # the same difference on 100 000 images is far outside the noise
    assert judge([(1.0, "a"), (-1.0, "b")], [{"a": 0.30, "b": 0.28}], [100_000])["verdict"] == "shown"
    # and a clear difference the other way is contradicted, not merely not shown
    assert judge([(1.0, "a"), (-1.0, "b")], [{"a": 0.10, "b": 0.40}], [360])["verdict"] == "contradicted"


def test_the_margin_is_the_one_stated():
    # difference 0.1, binomial SE 0.04: shown at 2 SE (0.08), not at 3 SE (0.12)
    row = {"a": 0.6}  # SE of one proportion p = 0.6 on 150 images: √(.24/150) = 0.04
    assert judge([(1.0, "a")], [row], [150], constant=-0.5, margin=2)["verdict"] == "shown"
    assert judge([(1.0, "a")], [row], [150], constant=-0.5, margin=3)["verdict"] == "not shown"


def test_seeds_that_disagree_widen_the_error():
    # mean difference 0.1 with a tiny binomial error (many images) but seeds at −0.2, 0.1, 0.4
    rows = [{"a": 0.5 + d, "b": 0.5} for d in (-0.2, 0.1, 0.4)]
    v = judge([(1.0, "a"), (-1.0, "b")], rows, [100_000] * 3)
    assert v["difference"] == pytest.approx(0.1)
    assert v["se_seeds"] == pytest.approx(0.3 / math.sqrt(3)) and v["standard_error"] == v["se_seeds"]
    assert v["verdict"] == "not shown"
    # seeds that agree: the binomial error rules, and the finding is shown
    rows = [{"a": 0.6 + d, "b": 0.5} for d in (-0.005, 0.0, 0.005)]
    assert judge([(1.0, "a"), (-1.0, "b")], rows, [1000] * 3)["verdict"] == "shown"


def test_judge_refuses_mismatched_inputs():
    with pytest.raises(ConfigError, match="one image count per seed"):
        judge([(1.0, "a")], [{"a": 0.5}], [10, 10])
    with pytest.raises(ConfigError, match="margin"):
        judge([(1.0, "a")], [{"a": 0.5}], [10], margin=0)
