"""Do the learned templates learn? ``template_corr`` of a demo pre-training, per modality.

Pre-trains (or reuses) ``mmlib pretrain --config SCALE OVERRIDES`` and prints, as one JSON
line, the correlation of each learned template with its modality's mean image over the
pre-training studies, in template space, over the voxels some study covers (what chapter 05
reports as ``template_corr``; :func:`mmlib.viz.explore.template_corr`).

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
    cache = work_dir(args.scale) / "cache" / f"means_{'x'.join(map(str, templates.shape))}.npz"
    if cache.is_file():
        z = np.load(cache)
        means = {m: (z[f"{m}_mean"], z[f"{m}_count"]) for m in BRATS}
    else:
        means = explore.modality_means(store, BRATS, templates)
        cache.parent.mkdir(parents=True, exist_ok=True)
        flat = {
            f"{m}_{k}": v for m, (a, b) in means.items() for k, v in (("mean", a), ("count", b))
        }
        np.savez_compressed(cache, **flat)
    corr = explore.template_corr(templates, means)
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
                "template_corr_mean": round(float(np.mean(list(corr.values()))), 4),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
