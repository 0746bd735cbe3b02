"""bench/paired.py: the paired statistics bench_hidden.py prints, against values worked out by
hand (exact binomial tails; Wilcoxon W+ with average ranks and the tie correction)."""

from __future__ import annotations

import math

import pytest

from bench.paired import compare, sign_test, signed_rank


def test_the_sign_test_is_the_exact_two_sided_binomial_tail_without_ties() -> None:
    result = sign_test([1.0, 2.0, 3.0, -1.0, 0.0])
    # 3 above, 1 below, the tie left out: 2 * P(X <= 1), X ~ Bin(4, 1/2) = 2 * 5/16
    assert (result.above, result.below, result.p) == (3, 1, 0.625)
    assert sign_test([0.0, 0.0]).p == 1.0


def test_the_sign_test_stays_exact_for_a_thousand_pairs() -> None:
    result = sign_test([1.0] * 1000)
    assert result.p == pytest.approx(2 / 2**1000, rel=1e-12)
    assert result.p > 0


def test_signed_ranks_average_ties_and_correct_the_variance() -> None:
    # Magnitudes 0.5 (ten, ranks 1..10, average 5.5, all negative) and 1 (ten, ranks 11..20,
    # average 15.5, all positive): W+ = 155 against a mean of 105; variance 717.5 - 1980/48.
    result = signed_rank([1.0] * 10 + [-0.5] * 10)
    z = 50 / math.sqrt(717.5 - 1980 / 48)
    assert result.z == pytest.approx(z)
    assert result.p == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_a_symmetric_sample_has_no_effect_and_far_tails_do_not_round_to_zero() -> None:
    assert signed_rank([1.0, -1.0, 2.0, -2.0]).z == 0.0
    assert signed_rank([]).p == 1.0
    assert 0 < signed_rank([1.0] * 1000).p < 1e-200


def test_compare_reports_the_median_difference_and_the_ratio_of_medians() -> None:
    c = compare([3.0, 5.0, 4.0], [2.0, 5.0, 2.0])
    assert (c.pairs, c.median_first, c.median_second, c.median_difference) == (3, 4.0, 2.0, 1.0)
    assert c.ratio == 2.0
    with pytest.raises(ValueError, match="same, non-zero number"):
        compare([1.0], [])
