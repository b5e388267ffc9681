"""Do the learned templates learn? ``template_corr`` of a demo pre-training, per modality.

Pre-trains (or reuses) ``mmlib pretrain --config SCALE OVERRIDES`` and prints, as one JSON
line, the correlation of each learned template with its modality's mean image over the
pre-training studies, in template space, in the head (what chapter 05 reports as
``template_corr``; :func:`mmlib.viz.explore.template_corr`), and ``template_corr_box`` over every
voxel some study's box covers (neck and background included).

Run: ``python benchmarks/templates.py --scale demo objective=md_only
objective.template_scaling=global optim.template_lr=1e-2``. The mean images are cached in
``work_dir(scale)/cache/`` (they depend only on the store and the template grid).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

BRATS = ("flair", "t1", "t1c", "t2")


def main() -> None:
    from mmlib.data.store import Store
    from mmlib.engine.pretrain import pretrain
    from mmlib.paths import work_dir
    from mmlib.runs import load_run, read_config
    from mmlib.viz import explore

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="demo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    run = pretrain(args.scale, list(args.overrides), progress=False)
    train_s = time.time() - t0
    _, templates = explore.run_model(run)
    cfg = read_config(run)
    store = Store(cfg["data"]["store"])
    shape = "x".join(map(str, templates.shape))
    cache = work_dir(args.scale) / "cache" / f"means_head_{shape}.npz"
    parts = ("mean", "count", "head")
    if cache.is_file():
        z = np.load(cache)
        means = {m: tuple(z[f"{m}_{k}"] for k in parts) for m in BRATS}
    else:
        means = explore.modality_means(store, BRATS, templates)
        cache.parent.mkdir(parents=True, exist_ok=True)
        flat = {f"{m}_{k}": v for m, arrays in means.items() for k, v in zip(parts, arrays)}
        np.savez_compressed(cache, **flat)
    corr = explore.template_corr(templates, means)
    corr_box = explore.template_corr(templates, means, where="box")
    res = load_run(run)["results"]
    print(
        json.dumps(
            {
                "overrides": args.overrides,
                "run_dir": str(run),
                "steps": res["steps"],
                "train_s": round(train_s, 1),
                "final": res["final"],
                "template_corr": {m: round(r, 4) for m, r in corr.items()},
                "template_corr_box": {m: round(r, 4) for m, r in corr_box.items()},
                "template_corr_mean": round(float(np.mean(list(corr.values()))), 4),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
