"""Demo-scale cost and scores of the multi-site T1 classification tasks (ADNI, ADHD-200, ABIDE).

Writes the three embedded sources at the demo preset (and only them) into ``--out``, curates
them at 2 mm, scores the linear volume baseline (:mod:`mmlib.evaluate.baseline`) and runs one
fine-tuning per task and initialisation at the demo preset, printing and saving
(``--out/cls_tasks.json``) the wall time per stage and per run, the accuracy and the AUC with
95 % bootstrap intervals. ``brainmvp`` needs a pre-training store: pass ``--inits scratch`` on
a machine without one (the book's chapter 08 runs both on the full demo store).

    MMLIB_WORK=/tmp/w .venv/bin/python benchmarks/cls_tasks.py --out /tmp/w/cls --inits scratch
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="work folder (cohort, store, runs)")
    parser.add_argument("--tasks", nargs="+", default=["adni", "adhd200", "abide"])
    parser.add_argument("--inits", nargs="+", default=["scratch"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import pandas as pd
    import torch

    from mmlib.data.curate import curate
    from mmlib.data.layouts import discover
    from mmlib.data.phantom import cohort_spec, make_cohort, only
    from mmlib.data.store import Store
    from mmlib.evaluate.baseline import volume_baseline
    from mmlib.evaluate.classification import scores_with_intervals
    from mmlib.evaluate.grid import finetune_grid

    torch.set_num_threads(args.threads)
    base = Path(args.out)
    out: dict = {"load_before": os.getloadavg()}
    t0 = time.time()
    spec = only(cohort_spec("demo"), "adni", "adhd200", "abide")
    root = make_cohort(spec, base / "cohort", workers=2)
    out["cohort_s"] = time.time() - t0
    t0 = time.time()
    report = curate(discover(root), base / "store", spacing=2.0, workers=2, progress=False)
    out["curate_s"], out["failed"] = time.time() - t0, report.failed
    store = Store(base / "store")
    for task in args.tasks:
        b = volume_baseline(store, task)
        b.pop("predictions")
        out[f"baseline/{task}"] = b
        print(task, "baseline", b, flush=True)
    for task in args.tasks:
        for init in args.inits:
            t0 = time.time()
            [run] = finetune_grid(
                "demo",
                [init],
                [1.0],
                [0],
                {"task": task, "data.store": str(base / "store"), "run.root": str(base / "runs")},
                progress=False,
            )
            res = json.loads((run / "results.json").read_text())
            scores = scores_with_intervals(
                pd.read_csv(run / "test_scores.csv"), res["spec"]["classes"]
            )
            out[f"{init}/{task}"] = {"wall_s": time.time() - t0, **scores, "run": str(run)}
            print(task, init, out[f"{init}/{task}"], flush=True)
            out["load_after"] = os.getloadavg()
            (base / "cls_tasks.json").write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
