"""Statistics of the book's comparisons: paired intervals over seeds, power, unpaired intervals.

Every comparison the book states pairs two initialisations by fine-tuning seed (same labelled
studies, same crops, same decoder initialisation at one seed), so what is compared is the
per-seed difference ``d_s = init_s - baseline_s``.

- :func:`paired_comparison`: the per-seed values, the paired mean difference, its 95 % interval
  from the paired t distribution (``mean ± t_{n-1, 0.975} · sd / sqrt(n)``), the two-sided p value
  and ``resolved``: the interval excludes zero. The t interval treats the test studies as fixed
  (the question "does it help on this test set, over fine-tuning seeds"). A table of several
  comparisons (:func:`mmlib.evaluate.reports.paired_differences`) also asks that the p value
  stays below 5 % after :func:`holm`'s adjustment for the table's comparisons.
- :func:`bootstrap_paired`: when per-study scores exist (``test_scores.csv``), a two-way
  bootstrap of the seed × study matrix of paired differences: seeds and studies are resampled
  independently (the same studies for every seed, since every seed scores the same test split),
  percentile interval of the grand mean. It widens the question to new test studies too.
- :func:`variance_components`, :func:`seeds_needed`, :func:`studies_needed`,
  :func:`power_analysis`: how many seeds (and test studies) a resolved answer would take, from
  the observed paired spread. Seeds: the exact power of the paired t-test under the noncentral t
  distribution, taking the observed mean difference as the true effect and the observed sd as the
  true sd (a plug-in estimate: with three seeds the sd itself is uncertain, so read the count as
  an order of magnitude). Studies: a normal approximation on the two-way variance components
  ``Var(mean) = s²_seed / n + s²_study / m + s²_residual / (n m)`` (method of moments of the
  two-way layout without replication).
- :func:`wilson_interval` (accuracy: a binomial proportion) and :func:`auc_interval` (DeLong's
  variance for a binary AUC; a percentile bootstrap over studies for a one-vs-rest macro AUC):
  unpaired intervals of one run's classification scores; :func:`accuracy_auc_intervals`
  both, the one place every classification interval of the book and the baseline comes from.

References: DeLong, DeLong & Clarke-Pearson, Biometrics 44 (1988) 837-845 (the fast midrank form
of Sun & Xu, IEEE SPL 21 (2014) 1389); Wilson, JASA 22 (1927) 209-212.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
"""The level of every interval the book reports."""
POWER = 0.8
"""The power a "how many seeds would it take" answer asks for."""


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence should be in (0, 1), got {confidence}")


def t_interval(values: ArrayLike, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t interval of the mean of ``values``: ``mean ± t_{n-1} · sd / sqrt(n)``.

    Args:
        values: ``(n,)`` numbers (per-seed differences for a paired interval).
        confidence: the level. Defaults to 0.95.

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` with fewer than two values.
    """
    from scipy import stats

    _check_confidence(confidence)
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return float(x.mean() - half), float(x.mean() + half)


def excludes_zero(ci: Sequence[float]) -> bool:
    """Whether an interval ``(lo, hi)`` lies wholly on one side of zero (False when undefined)."""
    lo, hi = float(ci[0]), float(ci[1])
    return bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0))


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjustment of a family of p values (NaN entries are not in the family).

    The ``k``-th smallest of the ``m`` finite p values becomes ``max_{j <= k} min(1, (m - j + 1)
    p_(j))``; rejecting where the adjusted value is below ``1 - confidence`` keeps the chance of
    any false "resolved" in the family at most ``1 - confidence`` (Holm, Scand. J. Statist. 6
    (1979) 65-70). Why the book needs it: a table of a dozen paired comparisons at three seeds
    each, tested one by one at 95 %, calls about one of them resolved by chance; a second build
    at another thread count then calls another one (measured: issue 18's note, stop 25).

    Args:
        p_values: ``(m,)`` two-sided p values; NaN where a comparison has no test (one seed).

    Returns:
        ``(m,)`` adjusted p values, NaN where the input is NaN.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    if idx.size == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


@dataclass(frozen=True)
class PairedComparison:
    """One initialisation against a baseline, paired by seed.

    Attributes:
        seeds: the seeds present for both, sorted.
        values: the initialisation's score per seed (same order).
        baseline_values: the baseline's score per seed.
        diffs: ``values - baseline_values`` per seed.
        mean_diff: the paired mean difference.
        sd_diff: the sd of ``diffs`` (ddof=1; NaN for one seed).
        ci95: the paired t interval of ``mean_diff`` at ``confidence``.
        p_value: two-sided paired t-test (NaN under two seeds or with zero spread).
        confidence: the level of ``ci95``. Defaults to 0.95.
    """

    seeds: tuple[int, ...]
    values: tuple[float, ...]
    baseline_values: tuple[float, ...]
    diffs: tuple[float, ...]
    mean_diff: float
    sd_diff: float
    ci95: tuple[float, float]
    p_value: float
    confidence: float = CONFIDENCE

    @property
    def resolved(self) -> bool:
        """The interval excludes zero (the book's only criterion for a stated difference)."""
        return excludes_zero(self.ci95)

    @property
    def n_seeds(self) -> int:
        """The number of paired seeds."""
        return len(self.seeds)


def paired_comparison(
    values: Mapping[Any, float],
    baseline: Mapping[Any, float],
    confidence: float = CONFIDENCE,
) -> PairedComparison:
    """Compare per-seed scores of an initialisation with a baseline's at the same seeds.

    Args:
        values: ``{seed: score}`` of the initialisation.
        baseline: ``{seed: score}`` of the baseline (seeds missing on either side are dropped).
        confidence: the interval's level. Defaults to 0.95.

    Returns:
        The :class:`PairedComparison`.

    Raises:
        ValueError: When no seed is present on both sides, or a score is not finite.
    """
    from scipy import stats

    _check_confidence(confidence)
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        raise ValueError(
            f"paired_comparison: no common seed (init has {sorted(values)}, baseline has "
            f"{sorted(baseline)}); run both at the same seeds"
        )
    a = np.array([values[s] for s in seeds], dtype=float)
    b = np.array([baseline[s] for s in seeds], dtype=float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"paired_comparison: a score is not finite ({a.tolist()}, {b.tolist()})")
    d = a - b
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    p = float(stats.ttest_rel(a, b).pvalue) if d.size > 1 and sd > 0 else float("nan")
    return PairedComparison(
        seeds=tuple(int(s) for s in seeds),
        values=tuple(a.tolist()),
        baseline_values=tuple(b.tolist()),
        diffs=tuple(d.tolist()),
        mean_diff=float(d.mean()),
        sd_diff=sd,
        ci95=t_interval(d, confidence),
        p_value=p,
        confidence=confidence,
    )


def bootstrap_paired(
    diffs: np.ndarray,
    confidence: float = CONFIDENCE,
    n_boot: int = 4000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the grand mean of a seed × study matrix of paired differences.

    Each replicate draws ``S`` seeds (rows) and ``T`` studies (columns) with replacement,
    independently, and averages the drawn sub-matrix: the two sources of spread (fine-tuning
    seed, test study) are both resampled. Deterministic for a given ``seed``.

    Args:
        diffs: ``(S, T)`` per-seed, per-study differences ``init - baseline`` (NaN cells, e.g. a
            study one run did not score, are left out of each mean).
        confidence: the level. Defaults to 0.95.
        n_boot: replicates. Defaults to 4000.
        seed: the generator's seed. Defaults to 0.

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` with fewer than two seeds.

    Raises:
        ValueError: When ``diffs`` is not 2-D or has no column.
    """
    _check_confidence(confidence)
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.shape[1] == 0:
        raise ValueError(f"bootstrap_paired: diffs should be (seeds, studies), got {d.shape}")
    n_s, n_t = d.shape
    if n_s < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_s, size=(n_boot, n_s))
    cols = rng.integers(0, n_t, size=(n_boot, n_t))
    means = np.empty(n_boot)
    valid = np.isfinite(d)
    filled = np.where(valid, d, 0.0)
    for i in range(n_boot):
        sub = np.ix_(rows[i], cols[i])
        count = valid[sub].sum()
        means[i] = filled[sub].sum() / count if count else np.nan
    lo, hi = np.nanpercentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def variance_components(diffs: np.ndarray) -> dict[str, float]:
    """Seed, study and residual variance of a seed × study matrix of paired differences.

    The method of moments of the two-way layout without replication: with ``S`` seeds, ``T``
    studies, mean squares ``MS_seed = T · var(row means)``, ``MS_study = S · var(column means)``
    and the residual mean square ``MS_res``, the components are ``s²_residual = MS_res``,
    ``s²_seed = (MS_seed - MS_res) / T`` and ``s²_study = (MS_study - MS_res) / S``, clipped at 0.

    Args:
        diffs: ``(S, T)`` differences, no NaN.

    Returns:
        ``{"seed", "study", "residual"}`` variances; with one study, ``study`` and ``residual``
        are 0 and ``seed`` is the variance of the per-seed values.

    Raises:
        ValueError: When ``diffs`` is not a complete 2-D matrix with at least two seeds.
    """
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 1 or not np.isfinite(d).all():
        raise ValueError(
            "variance_components: diffs should be a complete (seeds >= 2, studies) matrix, "
            f"got shape {d.shape}"
        )
    n_s, n_t = d.shape
    if n_t == 1:
        return {"seed": float(d[:, 0].var(ddof=1)), "study": 0.0, "residual": 0.0}
    row, col, grand = d.mean(1), d.mean(0), d.mean()
    ms_seed = n_t * float(row.var(ddof=1))
    ms_study = n_s * float(col.var(ddof=1))
    resid = d - row[:, None] - col[None, :] + grand
    ms_res = float((resid**2).sum() / ((n_s - 1) * (n_t - 1)))
    return {
        "seed": max(0.0, (ms_seed - ms_res) / n_t),
        "study": max(0.0, (ms_study - ms_res) / n_s),
        "residual": ms_res,
    }


def paired_t_power(n: int, effect: float, sd: float, confidence: float = CONFIDENCE) -> float:
    """Power of a two-sided paired t-test with ``n`` seeds (noncentral t, exact).

    Args:
        n: the number of seeds (>= 2).
        effect: the true mean difference.
        sd: the true sd of the per-seed differences (> 0).
        confidence: 1 - the test's level. Defaults to 0.95.

    Returns:
        The probability that the interval excludes zero.
    """
    from scipy import stats

    if n < 2 or not sd > 0:
        raise ValueError(f"paired_t_power: need n >= 2 and sd > 0, got n={n}, sd={sd}")
    df = n - 1
    crit = stats.t.ppf(0.5 + confidence / 2, df)
    nc = abs(effect) / sd * np.sqrt(n)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(
    effect: float,
    sd: float,
    confidence: float = CONFIDENCE,
    power: float = POWER,
    max_seeds: int = 100_000,
) -> int | None:
    """The fewest seeds with which a paired t interval excludes zero with probability ``power``.

    Plug-in: ``effect`` and ``sd`` are taken as the true mean and sd of the per-seed differences
    (the observed ones, usually). The answer is the smallest ``n >= 2`` with
    :func:`paired_t_power` ``>= power`` (for comparison, the normal approximation is
    ``n ≈ ((z_{1-α/2} + z_{power}) · sd / effect)²``).

    Returns:
        The number of seeds, or None when ``effect`` is 0 or more than ``max_seeds`` are needed.
    """
    if not sd > 0:
        raise ValueError(f"seeds_needed: sd should be > 0, got {sd}")
    if effect == 0 or not np.isfinite(effect):
        return None
    from scipy import stats

    z = stats.norm.ppf(0.5 + confidence / 2) + stats.norm.ppf(power)
    guess = max(2, int(np.floor((z * sd / abs(effect)) ** 2)))
    if guess > max_seeds:
        return None
    n = max(2, guess - 3)
    while paired_t_power(n, effect, sd, confidence) < power:
        n += 1
        if n > max_seeds:
            return None
    return n


def design_power(
    components: Mapping[str, float],
    effect: float,
    n_seeds: int,
    n_studies: int,
    confidence: float = CONFIDENCE,
) -> float:
    """Normal-approximation power of a seeds × studies design from variance components.

    ``SE² = s²_seed / n_seeds + s²_study / n_studies + s²_residual / (n_seeds · n_studies)``;
    power ``= Φ(|effect| / SE - z_{1-α/2})`` (the far tail neglected).
    """
    from scipy import stats

    se2 = (
        components["seed"] / n_seeds
        + components["study"] / n_studies
        + components["residual"] / (n_seeds * n_studies)
    )
    if se2 <= 0:
        return 1.0 if effect != 0 else 0.0
    z = stats.norm.ppf(0.5 + confidence / 2)
    return float(stats.norm.cdf(abs(effect) / np.sqrt(se2) - z))


def studies_needed(
    components: Mapping[str, float],
    effect: float,
    n_seeds: int,
    confidence: float = CONFIDENCE,
    power: float = POWER,
    max_studies: int = 100_000,
) -> int | None:
    """The fewest test studies with which ``n_seeds`` seeds reach ``power`` (:func:`design_power`).

    Returns:
        The number of studies, or None when no number of studies suffices at ``n_seeds`` (the
        seed component alone is too large) or more than ``max_studies`` would be needed.
    """
    if effect == 0 or design_power(components, effect, n_seeds, max_studies, confidence) < power:
        return None
    lo, hi = 1, max_studies
    while lo < hi:
        mid = (lo + hi) // 2
        if design_power(components, effect, n_seeds, mid, confidence) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def power_analysis(
    comparison: PairedComparison,
    per_study: np.ndarray | None = None,
    confidence: float = CONFIDENCE,
    power: float = POWER,
) -> dict[str, Any]:
    """How many seeds (and test studies) a resolved answer to ``comparison`` would take.

    Args:
        comparison: the observed paired comparison (at least two seeds).
        per_study: ``(S, T)`` per-seed, per-study differences of the same runs, when the runs
            have ``test_scores.csv``. Defaults to None.
        confidence: the interval's level. Defaults to 0.95.
        power: the probability of a resolved answer asked for. Defaults to 0.8.

    Returns:
        ``n_seeds``, ``mean_diff``, ``sd_diff``, ``power_now`` (of the design as run),
        ``seeds_needed`` (paired t, plug-in; None when the observed difference is 0) and, with
        ``per_study``: ``n_studies``, ``components`` (:func:`variance_components`),
        ``studies_needed`` at the current seeds (None: not reachable with more studies alone)
        and ``studies_needed_at_2x_seeds``.

    Raises:
        ValueError: When the comparison has fewer than two seeds or no spread.
    """
    if comparison.n_seeds < 2 or not comparison.sd_diff > 0:
        raise ValueError(
            f"power_analysis: need >= 2 seeds with a spread, got {comparison.n_seeds} seeds "
            f"(sd {comparison.sd_diff}); run more seeds"
        )
    effect, sd, n = comparison.mean_diff, comparison.sd_diff, comparison.n_seeds
    out: dict[str, Any] = {
        "n_seeds": n,
        "mean_diff": effect,
        "sd_diff": sd,
        "confidence": confidence,
        "power": power,
        "power_now": paired_t_power(n, effect, sd, confidence),
        "seeds_needed": seeds_needed(effect, sd, confidence, power),
    }
    if per_study is not None:
        d = np.asarray(per_study, dtype=float)
        d = d[:, np.isfinite(d).all(0)]
        if d.shape[1]:
            comp = variance_components(d)
            out.update(
                {
                    "n_studies": int(d.shape[1]),
                    "components": comp,
                    "studies_needed": studies_needed(comp, effect, n, confidence, power),
                    "studies_needed_at_2x_seeds": studies_needed(
                        comp, effect, 2 * n, confidence, power
                    ),
                }
            )
    return out


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (accuracy = correct / studies).

    Args:
        successes: correct predictions.
        n: test studies (> 0).
        confidence: the level. Defaults to 0.95.

    Returns:
        ``(lo, hi)`` within [0, 1].

    Raises:
        ValueError: When ``n <= 0`` or ``successes`` is outside ``[0, n]``.
    """
    from scipy import stats

    _check_confidence(confidence)
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: need 0 <= successes <= n, n > 0; got {successes}/{n}")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _midrank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j < len(x) and xs[j] == xs[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(len(x))
    out[order] = ranks
    return out


def delong_auc(y_true: ArrayLike, score: ArrayLike) -> tuple[float, float]:
    """A binary AUC and DeLong's variance of it.

    Args:
        y_true: ``(N,)`` classes 0/1.
        score: ``(N,)`` scores of class 1 (e.g. its probability).

    Returns:
        ``(auc, variance)``; the variance is NaN when a class has a single study.

    Raises:
        ValueError: When both classes are not present or the lengths differ.
    """
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(score, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"delong_auc: y_true {y.shape} and score {s.shape} should be (N,)")
    pos, neg = s[y == 1], s[y == 0]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("delong_auc: both classes must be present in y_true")
    tx, ty, tz = _midrank(pos), _midrank(neg), _midrank(np.concatenate([pos, neg]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    v10 = (tz[:m] - tx) / n  # per positive: share of negatives it outranks
    v01 = 1.0 - (tz[m:] - ty) / m  # per negative: share of positives that outrank it
    if m < 2 or n < 2:  # a class with one study: its spread, and so the variance, is unknown
        return auc, float("nan")
    return auc, float(v10.var(ddof=1) / m + v01.var(ddof=1) / n)


def auc_interval(
    y_true: ArrayLike,
    prob: ArrayLike,
    confidence: float = CONFIDENCE,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """An AUC and its interval over test studies.

    Two classes: DeLong's variance, a normal interval clipped to [0, 1]. More classes: the
    one-vs-rest macro AUC (as :func:`mmlib.evaluate.classification.classification_scores`) with
    a percentile bootstrap over studies (replicates missing a class are skipped).

    Args:
        y_true: ``(N,)`` class indices.
        prob: ``(N, K)`` class probabilities.
        confidence: the level. Defaults to 0.95.
        n_boot: bootstrap replicates (K > 2). Defaults to 2000.
        seed: the bootstrap's seed. Defaults to 0.

    Returns:
        ``(auc, lo, hi)``; all NaN when fewer than two classes are present, ``lo`` and ``hi``
        NaN when a class has a single study (two classes).
    """
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    _check_confidence(confidence)
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(prob, dtype=float)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"auc_interval: prob {p.shape} should be (N, K) with N = {y.shape[0]}")
    nan = float("nan")
    if len(set(y.tolist())) < 2:
        return nan, nan, nan
    if p.shape[1] == 2:
        auc, var = delong_auc(y, p[:, 1])
        if not np.isfinite(var):
            return auc, nan, nan
        half = float(stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(var))
        return auc, max(0.0, auc - half), min(1.0, auc + half)
    labels = list(range(p.shape[1]))

    def macro(idx: np.ndarray) -> float:
        if len(set(y[idx].tolist())) < p.shape[1]:
            return nan
        return float(
            roc_auc_score(y[idx], p[idx], multi_class="ovr", average="macro", labels=labels)
        )

    auc = macro(np.arange(len(y)))
    rng = np.random.default_rng(seed)
    reps = np.array([macro(rng.integers(0, len(y), len(y))) for _ in range(n_boot)])
    if not np.isfinite(reps).any():
        return auc, nan, nan
    lo, hi = np.nanpercentile(reps, [50 * (1 - confidence), 50 * (1 + confidence)])
    return auc, float(lo), float(hi)


def accuracy_auc_intervals(
    y_true: ArrayLike,
    prob: ArrayLike,
    confidence: float = CONFIDENCE,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Intervals of one run's accuracy (Wilson) and AUC (:func:`auc_interval`) over its test set.

    Args:
        y_true: ``(N,)`` class indices.
        prob: ``(N, K)`` class probabilities (the prediction is the argmax).
        confidence: the level. Defaults to 0.95.
        n_boot: bootstrap replicates of a K > 2 AUC. Defaults to 2000.
        seed: that bootstrap's seed. Defaults to 0.

    Returns:
        ``{"accuracy": (lo, hi), "auc": (lo, hi)}`` (NaN where not computable, see
        :func:`auc_interval`).

    Raises:
        ValueError: When shapes disagree or there are no studies.
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(prob, dtype=float)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise ValueError(
            f"accuracy_auc_intervals: prob {p.shape} should be (N, K) with N = len(y_true) = "
            f"{y.shape[0]} > 0"
        )
    correct = int((p.argmax(1) == y).sum())
    _, lo, hi = auc_interval(y, p, confidence, n_boot=n_boot, seed=seed)
    return {"accuracy": wilson_interval(correct, len(y), confidence), "auc": (lo, hi)}
