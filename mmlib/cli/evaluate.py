"""``mmlib evaluate``: gather fine-tuning runs into tables, or test a run on modality subsets.

``mmlib evaluate report ROOT [--metric M] [--baseline scratch] [--out DIR]`` prints mean ± sd
over seeds per (task, label fraction, initialisation) and the paired differences to the
baseline, and writes them as CSV (and figures) into ``--out``.
``mmlib evaluate robustness RUN [--fills template zero]`` prints the modality-subset table of a
finished run (cached in the run folder).
``mmlib evaluate segmentation --pred DIR --ref SOURCE_OR_DIR [--scheme S] [--out CSV]`` scores
a folder of predicted label maps against references as the challenges do (Dice, HD95,
lesion-wise Dice and F1, lesion counts, empty references; :mod:`mmlib.evaluate.challenge`),
prints mean ± sd per region and writes one row per study and region to ``--out``.
``mmlib evaluate evidence ROOT --name N --task T --fraction F --seeds S ...`` writes finished
runs as shipped evidence (``mmlib/evidence/N.csv``, ``N_studies.csv``, ``N.json``;
:mod:`mmlib.evaluate.evidence`), which notebook 12 states beside the book's own runs.
Exit status 0, 1 when nothing was found or an input is wrong, 2 for usage errors;
``segmentation``: 0 every study scored, 3 some failed (each with a one-line reason), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmlib evaluate``."""
    sub = parser.add_subparsers(dest="action", required=True)
    rep = sub.add_parser("report", help="tables of finished fine-tuning runs")
    rep.add_argument("roots", nargs="+", help="run folders or folders holding them")
    rep.add_argument("--metric", default=None, help="metric (default dice_mean or accuracy)")
    rep.add_argument("--baseline", default="scratch", help="initialisation to pair against")
    rep.add_argument("--out", default=None, help="folder for CSV tables and figures")
    rob = sub.add_parser("robustness", help="score a run on every modality subset")
    rob.add_argument("run", help="a finished fine-tuning run folder")
    rob.add_argument("--fills", nargs="+", default=["template", "zero"], help="fills to compare")
    rob.add_argument("--max-test", type=int, default=None, help="at most this many test studies")
    evi = sub.add_parser("evidence", help="write finished runs as shipped evidence")
    evi.add_argument("roots", nargs="+", help="run folders or folders holding them")
    evi.add_argument("--name", required=True, help="file stem, e.g. headline_heldout")
    evi.add_argument("--task", required=True, help="the task, e.g. brats_ped")
    evi.add_argument("--fraction", type=float, required=True, help="the label fraction")
    evi.add_argument("--seeds", type=int, nargs="+", required=True, help="the seeds to ship")
    evi.add_argument("--metric", default="dice_mean", help="metric (default dice_mean)")
    evi.add_argument(
        "--command", action="append", default=[], help="a command that made the runs (repeat)"
    )
    evi.add_argument("--threads", type=int, default=None, help="threads the runs used")
    evi.add_argument("--out", default=None, help="folder (default: mmlib/evidence)")
    seg = sub.add_parser("segmentation", help="score predicted label maps against references")
    seg.add_argument("--pred", required=True, help="folder of <study>.nii.gz predictions")
    seg.add_argument(
        "--ref",
        required=True,
        help="folder of <study>.nii.gz labels, or a source mmlib curate reads",
    )
    seg.add_argument(
        "--scheme",
        choices=["brats2021", "brats2023", "binary", "tissue"],
        default=None,
        help="label scheme (default: told from the references)",
    )
    seg.add_argument("--out", default=None, help="CSV file, one row per study and region")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``mmlib evaluate``."""
    import pandas as pd

    from mmlib.evaluate.reports import collect_runs, paired_differences, summary_table

    pd.set_option("display.width", 160)
    if args.action == "segmentation":
        return _segmentation(args)
    try:
        if args.action == "report":
            runs = collect_runs(args.roots)
            if runs.empty:
                print(
                    "mmlib evaluate: no finished run (results.json + DONE) under "
                    f"{', '.join(args.roots)}"
                )
                return 1
            out = Path(args.out) if args.out else None
            if out:
                out.mkdir(parents=True, exist_ok=True)
                runs.to_csv(out / "runs.csv", index=False)
            for kind, grp in runs.groupby("kind"):
                metric = args.metric or ("dice_mean" if kind == "segmentation" else "accuracy")
                tab = summary_table(grp, metric)
                diff = paired_differences(grp, metric, args.baseline)
                print(f"== {kind}: {metric}, mean ± sd over seeds")
                print(tab.to_string(index=False))
                if not diff.empty:
                    print(f"== paired differences to {args.baseline} ({metric})")
                    print(diff.drop(columns=["diffs"]).to_string(index=False))
                if out:
                    tab.to_csv(out / f"summary_{kind}.csv", index=False)
                    diff.to_csv(out / f"paired_{kind}.csv", index=False)
            return 0
        if args.action == "evidence":
            from mmlib.evaluate.evidence import EVIDENCE_DIR, export_evidence

            path = export_evidence(
                args.roots,
                args.name,
                task=args.task,
                label_fraction=args.fraction,
                seeds=args.seeds,
                metric=args.metric,
                commands=args.command,
                threads=args.threads,
                out_dir=args.out or EVIDENCE_DIR,
            )
            print(f"wrote {path} (and {path.stem}_studies.csv, {path.stem}.json)")
            return 0
        from mmlib.evaluate.robustness import subset_robustness

        table = subset_robustness(args.run, args.fills, max_test=args.max_test)
        print(table.to_string(index=False))
        return 0
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"mmlib evaluate: {err}")
        return 1


def _segmentation(args: argparse.Namespace) -> int:
    """``mmlib evaluate segmentation``: 0 all scored, 3 some failed, 2 usage error."""
    import os

    from mmlib.evaluate.challenge import score_folder, summary

    try:
        res = score_folder(args.pred, args.ref, args.scheme, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        print(f"mmlib evaluate segmentation: {err}", file=sys.stderr)
        return 2
    for note in res.notes:
        print(note)
    for sid in res.missing:
        print(f"MISSING {sid}: no prediction in {args.pred}; scored as an empty prediction")
    for sid, reason in sorted(res.failed.items()):
        print(f"FAILED {sid}: {reason}")
    n = res.table["study"].nunique()
    print(
        f"== {n} studies scored ({res.scheme}), {len(res.missing)} without a prediction, "
        f"{len(res.failed)} failed; mean ± sd per region"
    )
    if n:
        print(summary(res.table).to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        res.table.to_csv(tmp, index=False)
        os.replace(tmp, out)
        print(f"wrote {out}")
    return res.status
