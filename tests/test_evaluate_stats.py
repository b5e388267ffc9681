"""Paired intervals over seeds, bootstrap over seeds and studies, power, Wilson and DeLong."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmlib.evaluate.stats import (
    auc_interval,
    bootstrap_paired,
    delong_auc,
    excludes_zero,
    paired_comparison,
    paired_t_power,
    power_analysis,
    seeds_needed,
    studies_needed,
    t_interval,
    variance_components,
    wilson_interval,
)


def test_t_interval_known_values() -> None:
    lo, hi = t_interval([0.05, 0.07, 0.06])
    # mean 0.06, sd 0.01, t_{2, 0.975} = 4.302653
    assert (lo, hi) == pytest.approx((0.06 - 0.024841, 0.06 + 0.024841), abs=1e-6)
    assert np.isnan(t_interval([0.1])[0])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([0.1, 0.2], confidence=1.5)


def test_paired_comparison_pairs_by_seed_and_resolves_on_the_interval() -> None:
    base = {0: 0.50, 1: 0.60, 2: 0.40, 7: 0.9}  # seed 7 has no partner: dropped
    tight = paired_comparison({0: 0.55, 1: 0.67, 2: 0.46}, base)
    assert tight.seeds == (0, 1, 2) and tight.n_seeds == 3
    assert tight.diffs == pytest.approx((0.05, 0.07, 0.06))
    assert tight.baseline_values == pytest.approx((0.5, 0.6, 0.4))
    assert tight.mean_diff == pytest.approx(0.06) and tight.sd_diff == pytest.approx(0.01)
    assert tight.resolved and tight.p_value < 0.05
    # mean above its sd (the old criterion) but the t interval crosses zero: not resolved
    loose = paired_comparison({0: 0.58, 1: 0.62, 2: 0.45}, base)
    assert abs(loose.mean_diff) > loose.sd_diff and not loose.resolved
    assert loose.ci95[0] < 0 < loose.ci95[1]
    one = paired_comparison({0: 0.6}, base)
    assert not one.resolved and np.isnan(one.sd_diff)
    with pytest.raises(ValueError, match="no common seed"):
        paired_comparison({5: 0.1}, base)
    with pytest.raises(ValueError, match="not finite"):
        paired_comparison({0: float("nan")}, base)


def test_excludes_zero() -> None:
    assert excludes_zero((0.01, 0.2)) and excludes_zero((-0.3, -0.1))
    assert not excludes_zero((-0.01, 0.2)) and not excludes_zero((float("nan"), 1.0))


def test_bootstrap_over_seeds_and_studies() -> None:
    rng = np.random.default_rng(1)
    const = np.full((4, 6), 0.1)
    assert bootstrap_paired(const) == pytest.approx((0.1, 0.1))
    # a study effect: the seed-only t interval is narrow, the two-way bootstrap is wider
    d = 0.02 + rng.normal(0, 0.005, (5, 1)) + rng.normal(0, 0.1, (1, 12))
    d = d + rng.normal(0, 0.01, (5, 12))
    lo, hi = bootstrap_paired(d, seed=3)
    t_lo, t_hi = t_interval(d.mean(1))
    assert lo < d.mean() < hi and (hi - lo) > 2 * (t_hi - t_lo)
    assert bootstrap_paired(d, seed=3) == (lo, hi)  # deterministic
    with_nan = d.copy()
    with_nan[0, 0] = np.nan
    assert np.isfinite(bootstrap_paired(with_nan)).all()
    assert np.isnan(bootstrap_paired(d[:1])[0])
    with pytest.raises(ValueError, match="seeds, studies"):
        bootstrap_paired(d[0])


def test_variance_components_recover_an_additive_matrix() -> None:
    a = np.array([0.0, 0.1, -0.1, 0.05])
    b = np.array([0.3, -0.2, 0.0, 0.1, -0.2])
    comp = variance_components(a[:, None] + b[None, :])
    assert comp["residual"] == pytest.approx(0.0, abs=1e-12)
    assert comp["seed"] == pytest.approx(a.var(ddof=1))
    assert comp["study"] == pytest.approx(b.var(ddof=1))
    assert variance_components(a[:, None])["seed"] == pytest.approx(a.var(ddof=1))
    with pytest.raises(ValueError, match="complete"):
        variance_components(a[None, :])


def test_power_and_seeds_needed_match_published_tables() -> None:
    # paired t, two-sided 5 %, 80 % power (Cohen 1988; G*Power): d = 1 -> 10, d = 0.5 -> 34
    assert seeds_needed(1.0, 1.0) == 10
    assert seeds_needed(0.5, 1.0) == 34
    assert seeds_needed(-0.5, 1.0) == 34
    assert paired_t_power(34, 0.5, 1.0) >= 0.8 > paired_t_power(33, 0.5, 1.0)
    assert seeds_needed(0.0, 1.0) is None
    with pytest.raises(ValueError, match="sd"):
        seeds_needed(0.1, 0.0)


def test_studies_needed_and_power_analysis() -> None:
    comp = {"seed": 0.0001, "study": 0.01, "residual": 0.001}
    m = studies_needed(comp, 0.05, n_seeds=3)
    assert m is not None and m > 12
    assert studies_needed({"seed": 1.0, "study": 0.0, "residual": 0.0}, 0.05, 3) is None
    rng = np.random.default_rng(0)
    per_study = 0.03 + rng.normal(0, 0.02, (3, 1)) + rng.normal(0, 0.05, (3, 8))
    cmp = paired_comparison(
        dict(enumerate(0.5 + per_study.mean(1))), dict(enumerate(np.full(3, 0.5)))
    )
    pa = power_analysis(cmp, per_study)
    assert pa["n_seeds"] == 3 and pa["n_studies"] == 8
    assert pa["seeds_needed"] == seeds_needed(cmp.mean_diff, cmp.sd_diff)
    assert 0.0 < pa["power_now"] < 1.0 and set(pa["components"]) == {"seed", "study", "residual"}
    with pytest.raises(ValueError, match="more seeds"):
        power_analysis(paired_comparison({0: 0.6}, {0: 0.5}))


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 6)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(6, 6)[1] == pytest.approx(1.0)
    # six test studies at accuracy 0.5: the interval spans most of [0, 1]
    lo, hi = wilson_interval(3, 6)
    assert lo < 0.2 and hi > 0.8
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(7, 6)


def _delong_brute(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    return float(psi.mean()), float(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))


def test_delong_matches_its_definition_and_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 40)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounded: ties between classes
    auc, var = delong_auc(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert (auc, var) == pytest.approx(_delong_brute(y, s))
    a, lo, hi = auc_interval(y, np.stack([1 - s, s], 1))
    assert a == pytest.approx(auc) and lo < auc < hi
    assert hi - lo == pytest.approx(2 * 1.959964 * np.sqrt(var), rel=1e-4)
    assert np.isnan(auc_interval(np.zeros(5, int), np.full((5, 2), 0.5))[0])
    with pytest.raises(ValueError, match="both classes"):
        delong_auc([1, 1], [0.2, 0.3])


def test_auc_interval_multiclass_bootstrap() -> None:
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], 15)
    logits = rng.normal(0, 1, (45, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    auc, lo, hi = auc_interval(y, p, n_boot=300)
    assert auc == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert lo < auc < hi <= 1.0


def test_delong_has_no_variance_with_a_single_study_of_a_class() -> None:
    auc, var = delong_auc([0, 1], [0.2, 0.7])
    assert auc == 1.0 and np.isnan(var)
    assert np.isnan(auc_interval([0, 1], np.array([[0.8, 0.2], [0.3, 0.7]]))[1])
