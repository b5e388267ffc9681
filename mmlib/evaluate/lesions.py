"""Lesion-wise segmentation metrics as the BraTS challenges compute them, on panoptica.

BraTS has ranked segmentations lesion by lesion since 2023: each region's connected components
are its lesions, predicted and reference lesions are matched, and missed (false negative) and
false (false positive) lesions are penalised. The official evaluation today is the
``BraTS-evaluation`` package (BrainLesion, https://pypi.org/project/BraTS-evaluation/, 0.0.10),
built on panoptica (BrainLesion/panoptica, Apache-2.0). This module runs panoptica with the
parameters that package publishes for every segmentation task (its ``configs/config_gli.yaml``,
``config_ped.yaml``, ``config_mets.yaml``, ``config_MenPre.yaml``, ``config_GoAT.yaml`` agree on
all of them):

=========================  =====================================================================
input                      semantic (``InputType.SEMANTIC``): one binary mask per region; merged
                           regions (TC, WT) are a ``LabelMergeGroup`` of their labels there,
                           which is the same binary mask
lesions                    connected components (``ConnectedComponentsInstanceApproximator``,
                           cc3d, 26-connectivity in 3-D)
matching                   one to one, maximising the summed Dice (``MaxBipartiteMatching``,
                           ``matching_metric=DSC``, ``matching_threshold=1e-6``: any overlap)
zero true positives        lesion Dice 0 (empty prediction, empty reference or no overlap);
                           NaN when neither mask has a lesion
=========================  =====================================================================

and reports, per study and region, what the package's parser reads from panoptica's result:

- ``lesion_dice``: ``sq_dsc``, the mean Dice of the matched lesion pairs (panoptica's
  segmentation quality);
- ``lesion_f1``: ``rq = tp / (tp + fp/2 + fn/2)``, the lesion detection F1 (recognition
  quality);
- ``tp``, ``fp``, ``fn``: matched, unmatched predicted and unmatched reference lesions.

Both are NaN when reference and prediction are empty (no lesion to score; the official parser's
means skip them). The BraTS 2023 scripts (rachitsaluja/BraTS-2023-Metrics) differed: they grew
each reference lesion by a dilation (3 iterations for GLI, SSA, PED; 1 for MEN, MET), merged
every predicted component touching it into one match (many to one) and dropped reference
lesions below a volume threshold (50 voxels; 2 for MET); the panoptica-based evaluation that
replaced them matches one to one without dilation or threshold, which is what is computed here.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

MATCHING_THRESHOLD = 1e-6
"""Minimum Dice of a matched lesion pair (the official configs: any overlap)."""

LESION_COLUMNS = ("lesion_dice", "lesion_f1", "tp", "fp", "fn")
"""The columns :func:`lesion_scores` adds per region."""


@lru_cache(maxsize=1)
def _evaluator() -> Any:
    """The panoptica evaluator with the official BraTS parameters (built once)."""
    try:
        from panoptica import (
            ConnectedComponentsInstanceApproximator,
            InputType,
            MaxBipartiteMatching,
            Metric,
            Panoptica_Evaluator,
        )
        from panoptica.utils.citation_reminder import disable_citation_reminder
        from panoptica.utils.edge_case_handling import (
            EdgeCaseHandler,
            EdgeCaseResult,
            MetricZeroTPEdgeCaseHandling,
        )
    except ImportError as err:  # the venv recipe installs it with --no-deps (see the Makefile)
        raise ImportError(
            f"lesion-wise metrics need panoptica ({err}); install it as the Makefile does: "
            "pip install -c constraints.txt ruamel.yaml plotly && "
            "pip install --no-deps -c constraints.txt panoptica"
        ) from err

    disable_citation_reminder()
    zero_tp = MetricZeroTPEdgeCaseHandling(
        empty_prediction_result=EdgeCaseResult.ZERO,
        empty_reference_result=EdgeCaseResult.ZERO,
        no_instances_result=EdgeCaseResult.NAN,
        default_result=EdgeCaseResult.ZERO,
    )
    return Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=MaxBipartiteMatching(
            matching_metric=Metric.DSC, matching_threshold=MATCHING_THRESHOLD
        ),
        edge_case_handler=EdgeCaseHandler(
            listmetric_zeroTP_handling={Metric.DSC: zero_tp}, empty_list_std=EdgeCaseResult.NAN
        ),
        instance_metrics=[Metric.DSC],
        global_metrics=[Metric.DSC],
    )


def lesion_scores(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """Lesion-wise Dice, detection F1 and lesion counts of one region (see the module docstring).

    Args:
        pred: predicted binary mask ``(X, Y, Z)`` (any dtype; non-zero is foreground).
        ref: reference binary mask ``(X, Y, Z)``.
        spacing: voxel size in mm, passed to panoptica (Dice and the counts do not depend on
            it). Defaults to None (1 mm).

    Returns:
        ``{"lesion_dice", "lesion_f1", "tp", "fp", "fn"}``; the first two NaN when both masks
        are empty.

    Raises:
        ValueError: When the shapes differ or the masks are not 3-D.
    """
    p = np.asarray(pred) != 0
    r = np.asarray(ref) != 0
    if p.shape != r.shape or p.ndim != 3:
        raise ValueError(f"pred {p.shape} and ref {r.shape} should both be (X, Y, Z) masks")
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0, 1.0)
    # panoptica prints notes on stdout; a metric must not write into a command's output
    with contextlib.redirect_stdout(io.StringIO()):
        res = _evaluator().evaluate(p.astype(np.uint8), r.astype(np.uint8), voxelspacing=sp)
    (out,) = res.values()
    d = out.to_dict()
    return {
        "lesion_dice": _float(d.get("sq_dsc")),
        "lesion_f1": _float(d.get("rq")),
        "tp": int(d["tp"]),
        "fp": int(d["fp"]),
        "fn": int(d["fn"]),
    }


def _float(x: Any) -> float:
    v = float("nan") if x is None else float(x)
    return v if math.isfinite(v) else float("nan")


def region_lesion_scores(
    pred: np.ndarray, ref: np.ndarray, names: Sequence[str], spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """:func:`lesion_scores` of every region as flat ``<column>_<name>`` entries.

    Args:
        pred: predicted region masks ``(R, X, Y, Z)``.
        ref: reference region masks ``(R, X, Y, Z)``.
        names: the R region names.
        spacing: voxel size in mm. Defaults to None.

    Returns:
        ``lesion_dice_<name>``, ``lesion_f1_<name>``, ``tp_<name>``, ``fp_<name>``,
        ``fn_<name>`` and ``reference_empty_<name>`` (1 when the reference region is empty).
    """
    if len(names) != pred.shape[0] or pred.shape != ref.shape:
        raise ValueError(f"{len(names)} names for pred {pred.shape} and ref {ref.shape}")
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        rec = lesion_scores(pred[i], ref[i], spacing)
        out.update({f"{k}_{name}": v for k, v in rec.items()})
        out[f"reference_empty_{name}"] = int(not np.asarray(ref[i]).any())
    return out
