"""Scoring fine-tuned networks: per-study test scores, and a finished run scored once.

:func:`evaluate_segmentation` (Dice and HD95 per region, the lesion-wise metrics of the BraTS
evaluation and whether the reference region is empty; sliding-window inference) and
:func:`evaluate_classification` (accuracy, balanced accuracy, AUC, F1) score a network on
studies, optionally with modalities dropped and filled (robustness). :func:`load_network`
rebuilds a trained run's network from its folder; :func:`score_run` scores a trained run on its
test split and writes ``test_scores.csv``, ``predictions/`` (a few studies' label, prediction
and input), the ``test`` entry of ``results.json`` and, last, ``DONE`` (each written
atomically, so that a killed scoring leaves a run that is scored again, never one that lies).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from mmlib.data.labelled import ClassificationInputs, Volumes
from mmlib.engine.finetune import DONE, TRAINED, finetune_split, open_store, resolve_device
from mmlib.engine.initialise import build_network
from mmlib.evaluate.classification import classification_scores
from mmlib.evaluate.inference import drop_modalities, predict_volume, window_size
from mmlib.evaluate.lesions import region_lesion_scores
from mmlib.evaluate.segmentation import segmentation_scores
from mmlib.proxy.missing import fill_missing
from mmlib.proxy.templates import Templates
from mmlib.runs import fsync_dir, write_text_atomic
from mmlib.tasks import TaskSpec


def _test_input(
    sample: dict[str, Any],
    spec: TaskSpec,
    fill: str,
    templates: Templates | None,
    keep: Sequence[bool] | None,
    device: torch.device | str,
) -> torch.Tensor:
    """One test sample's input ``(1, C, X, Y, Z)``: channels not in ``keep`` dropped, every absent
    channel filled (template or zeros)."""
    image = sample["image"][None].to(device)
    present = sample["present"][None]
    if keep is not None:
        present = drop_modalities(present, keep)
    if not bool(present.all()):
        image = fill_missing(
            image,
            present,
            spec.modalities,
            fill,
            templates,
            sample["template_origin"][None],
            sample["spacing"],
        )
    return image


def evaluate_segmentation(
    net: nn.Module,
    store: Any,
    studies: Sequence[str],
    spec: TaskSpec,
    roi: Sequence[int] | str,
    fill: str = "zero",
    templates: Templates | None = None,
    keep: Sequence[bool] | None = None,
    hd95: bool = True,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    device: torch.device | str = "cpu",
    keep_predictions: int = 0,
    progress: bool = False,
    lesions: bool = True,
    amp: Any = "off",
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Dice/HD95 and lesion-wise scores per test study, optionally with modalities dropped.

    Args:
        net: the fine-tuned segmentation network.
        store: the store.
        studies: the studies to score.
        spec: the resolved task.
        roi: sliding-window size (see :func:`~mmlib.evaluate.inference.window_size`).
        fill: fill of absent channels (``template`` or ``zero``). Defaults to "zero".
        templates: the learned templates, for template fill. Defaults to None.
        keep: one bool per channel: False drops the modality (robustness). Defaults to None.
        hd95: also HD95. Defaults to True.
        sw_batch_size: windows per pass. Defaults to 4.
        overlap: window overlap. Defaults to 0.25.
        device: where to run. Defaults to "cpu".
        keep_predictions: return this many studies' label and prediction (uint8). Defaults to 0.
        progress: show a progress bar. Defaults to False.
        lesions: also the lesion-wise metrics (:mod:`mmlib.evaluate.lesions`). Defaults to True.
        amp: autocast of the inference (``eval.amp``; see
            :func:`~mmlib.evaluate.inference.predict_volume`). Defaults to "off".

    Returns:
        A DataFrame (one row per study: ``study``, ``dice_<region>``, ``hd95_<region>``,
        ``dice_mean`` and, with ``lesions``, ``lesion_dice_<region>``, ``lesion_f1_<region>``,
        ``tp_<region>``, ``fp_<region>``, ``fn_<region>``, ``reference_empty_<region>``) and
        ``{study: {"label", "pred", "image"}}`` for the kept predictions (label and prediction
        ``(X, Y, Z)`` uint8, image ``(C, X, Y, Z)`` float16).
    """
    assert spec.regions is not None
    net.eval()
    ds = Volumes(store, studies, spec.modalities)
    rows: list[dict[str, Any]] = []
    kept: dict[str, dict[str, np.ndarray]] = {}
    for i in tqdm(range(len(ds)), desc="evaluate", disable=not progress, leave=False):
        s = ds[i]
        image = _test_input(s, spec, fill, templates, keep, device)
        logits = predict_volume(net, image, roi, sw_batch_size, overlap, amp)
        pred = spec.regions.predict(logits).cpu()
        target = spec.regions.targets(s["label"][None])
        rec = segmentation_scores(
            pred, target, spec.regions.names, spacing=s["spacing"].tolist(), with_hd95=hd95
        )[0]
        if lesions:
            rec.update(
                region_lesion_scores(
                    pred[0].numpy(), target[0].numpy(), spec.regions.names, s["spacing"].tolist()
                )
            )
        rows.append({"study": s["study"], **rec})
        if len(kept) < keep_predictions:
            kept[s["study"]] = {
                "label": s["label"][0].numpy().astype(np.uint8),
                "pred": pred[0].numpy().astype(np.uint8),
                "image": image[0].cpu().numpy().astype(np.float16),
            }
    return pd.DataFrame(rows), kept


def evaluate_classification(
    net: nn.Module,
    data: ClassificationInputs,
    spec: TaskSpec,
    fill: str = "zero",
    templates: Templates | None = None,
    keep: Sequence[bool] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Class probabilities per study and the scores (accuracy, balanced accuracy, AUC, F1).

    Args:
        net: the fine-tuned classifier.
        data: the test inputs (each study once, ``length=None``).
        spec: the resolved task.
        fill: fill of absent channels. Defaults to "zero".
        templates: the learned templates, for template fill. Defaults to None.
        keep: one bool per channel: False drops the modality. Defaults to None.
        device: where to run. Defaults to "cpu".

    Returns:
        A DataFrame (``study``, ``target``, ``pred``, ``p_<class>``) and the scores.
    """
    net.eval()
    rows, probs, ys = [], [], []
    with torch.no_grad():
        for i in range(len(data)):
            s = data[i]
            image = _test_input(s, spec, fill, templates, keep, device)
            p = torch.softmax(net(image), dim=1)[0].cpu().numpy()
            probs.append(p)
            ys.append(int(s["label"]))
            rows.append(
                {
                    "study": s["study"],
                    "target": int(s["label"]),
                    "pred": int(p.argmax()),
                    **{f"p_{c}": float(p[j]) for j, c in enumerate(spec.classes)},
                }
            )
    return pd.DataFrame(rows), classification_scores(ys, np.stack(probs))


def classification_inputs(
    cfg: dict[str, Any], store: Any, studies: Sequence[str], spec: TaskSpec
) -> ClassificationInputs:
    """The evaluation inputs of a classification run (each study once, no flips)."""
    assert spec.attr is not None
    return ClassificationInputs(
        store, studies, spec.modalities, spec.attr, spec.classes, cfg["data"]["input_size"]
    )


def load_network(
    run_dir: str | Path,
) -> tuple[nn.Module, TaskSpec, Templates | None, dict[str, Any]]:
    """Rebuild a trained run's fine-tuned network (eval mode), its task, templates and config.

    Raises:
        FileNotFoundError: When the folder holds no trained run (``results.json``,
            ``identity.json``, ``model.safetensors``).
    """
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    for name in ("config.json", "results.json", "identity.json", "model.safetensors"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(
                f"{run_dir}: no {name}; not a trained fine-tuning run "
                "(train it with mmlib.engine.finetune.finetune)"
            )
    cfg = json.loads((run_dir / "config.json").read_text())
    res = json.loads((run_dir / "results.json").read_text())
    spec = TaskSpec.from_dict(res["spec"])
    ident = json.loads((run_dir / "identity.json").read_text())["checkpoint"]
    ckpt = Path(ident["path"]) if "path" in ident else None
    net, templates, _ = build_network(cfg, spec, ckpt)
    net.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    net.eval()
    return net, spec, templates, cfg


def summarise_test_scores(scores: pd.DataFrame) -> dict[str, float]:
    """The ``test`` entry of a segmentation run's ``results.json`` from its ``test_scores.csv``.

    Means over the test studies (the lesion-wise scores skip studies where both masks are
    empty, as the official BraTS parser does), ``*_sd`` of the Dice and lesion-wise Dice and F1
    scores, and sums of the lesion counts ``tp_/fp_/fn_<region>`` and of
    ``reference_empty_<region>`` (the number of test studies whose reference region is empty).
    """
    counts = ("tp_", "fp_", "fn_", "reference_empty_")
    out: dict[str, float] = {}
    for c in scores.columns:
        if c == "study":
            continue
        out[c] = int(scores[c].sum()) if c.startswith(counts) else float(scores[c].mean())
    out.update(
        {
            f"{c}_sd": float(scores[c].std(ddof=0))
            for c in scores.columns
            if c.startswith(("dice_", "lesion_dice_", "lesion_f1_"))
        }
    )
    return out


def score_run(run_dir: str | Path, progress: bool = False) -> dict[str, Any]:
    """Score a trained fine-tuning run on its test split (once; a scored run is read back).

    Writes ``test_scores.csv`` (one row per test study), ``predictions/<study>.npz`` (the first
    ``eval.n_predictions`` studies of a segmentation task), ``results.json`` with ``test`` (the
    means over the test studies, and ``*_sd`` of the Dice scores) and the evaluation time, then
    ``DONE``.

    Args:
        run_dir: a run folder written by :func:`mmlib.engine.finetune.finetune`.
        progress: show a progress bar. Defaults to False.

    Returns:
        The run's ``results.json`` as a dict.

    Raises:
        FileNotFoundError: When the run is not trained (no ``TRAINED`` or ``DONE``).
    """
    run_dir = Path(run_dir)
    if (run_dir / DONE).is_file():
        return dict(json.loads((run_dir / "results.json").read_text()))
    if not (run_dir / TRAINED).is_file():
        raise FileNotFoundError(
            f"{run_dir}: not trained (no {TRAINED}); run mmlib.engine.finetune.finetune first"
        )
    t_eval = time.time()
    net, spec, templates, cfg = load_network(run_dir)
    results: dict[str, Any] = json.loads((run_dir / "results.json").read_text())
    device = resolve_device(cfg["device"])
    net.to(device)
    store = open_store(cfg)
    test = finetune_split(cfg, store).test
    fill = str(results["fill"])
    if spec.kind == "segmentation":
        scores, kept = evaluate_segmentation(
            net,
            store,
            test,
            spec,
            window_size(cfg),
            fill,
            templates,
            hd95=bool(cfg["eval"]["hd95"]),
            sw_batch_size=int(cfg["eval"]["sw_batch_size"]),
            overlap=float(cfg["eval"]["overlap"]),
            device=device,
            keep_predictions=int(cfg["eval"]["n_predictions"]),
            progress=progress,
            amp=cfg["eval"].get("amp", "off"),
        )
        (run_dir / "predictions").mkdir(exist_ok=True)
        for study, arrays in kept.items():
            np.savez_compressed(run_dir / "predictions" / f"{study}.npz", **arrays)  # type: ignore[arg-type]
        metrics = summarise_test_scores(scores)
    else:
        data = classification_inputs(cfg, store, test, spec)
        scores, metrics = evaluate_classification(net, data, spec, fill, templates, device=device)
    tmp = run_dir / f".test_scores.csv.{os.getpid()}.tmp"
    scores.to_csv(tmp, index=False)
    os.replace(tmp, run_dir / "test_scores.csv")
    fsync_dir(run_dir)
    seconds = dict(results.pop("seconds", {}))
    eval_s = time.time() - t_eval
    results["test"] = metrics
    results["seconds"] = {
        "train": seconds.get("train"),
        "eval": eval_s,
        "total": float(seconds.get("total") or 0.0) + eval_s,
        "per_step": seconds.get("per_step"),
    }
    write_text_atomic(run_dir / "results.json", json.dumps(results, indent=1, default=str))
    write_text_atomic(run_dir / DONE, time.strftime("%Y-%m-%dT%H:%M:%S"))
    return results
