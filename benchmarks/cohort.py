"""Subjects per second of the embedded cohort at the demo preset: 1 worker vs N workers.

Both sides simulate the same studies (the demo preset, every source scaled by ``--fraction``)
into fresh temporary folders in the same process tree, ``--repeats`` times each (default 3),
interleaved, and the first round checks that both give identical bytes. Medians, spreads and
the load average are printed (``harness.py``); the last line is the ratio of medians, the
speed-up of N workers over the serial baseline.

    .venv/bin/python benchmarks/cohort.py                  # a quarter of the demo cohort
    .venv/bin/python benchmarks/cohort.py --fraction 0.1   # quicker
    .venv/bin/python benchmarks/cohort.py --fraction 1     # the whole demo cohort
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NILEARN_DATA", tempfile.mkdtemp(prefix="mmlib-nilearn-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import add_arguments, check_load, interleave, ratio_line, summarize

from mmlib.data.phantom import cohort_spec, make_cohort, with_counts
from mmlib.data.phantom.anatomy import load_anatomy


def _same(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument(
        "--fraction",
        type=float,
        default=0.25,
        help="share of each source's subjects (default 0.25)",
    )
    parser.add_argument("--workers", type=int, default=2)
    add_arguments(parser)
    args = parser.parse_args()
    check_load(args.busy)
    spec = cohort_spec(args.preset)
    spec = with_counts(
        spec, **{s.name: max(1, round(s.n_subjects * args.fraction)) for s in spec.sources}
    )
    n = sum(s.n_subjects for s in spec.sources)
    load_anatomy(spec.factor)  # built once, before timing (also shared by forked workers)
    same: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="mmlib-bench-cohort-") as tmp:
        counter = iter(range(10**6))

        def side(workers: int):
            def run() -> float:
                out = Path(tmp) / f"w{workers}-{next(counter)}"
                start = time.perf_counter()
                make_cohort(spec, out, seed=0, workers=workers)
                rate = n / (time.perf_counter() - start)
                firsts = sorted(Path(tmp).glob("w*-*"))
                if len(firsts) == 2 and not same:  # the first round: both sides written
                    same.append(_same(firsts[0], firsts[1]))
                return rate

            return run

        runs = interleave({"1": side(1), str(args.workers): side(args.workers)}, args.repeats)
    total = sum(s.n_subjects for s in cohort_spec(args.preset).sources)
    for workers, run in runs.items():
        print(
            summarize(
                f"{args.preset} x{args.fraction:g}: {n} studies, workers={workers}",
                run,
                f"studies/s (full {args.preset} cohort ~{total / run.median:.0f} s)",
            )
        )
    print(f"identical bytes across worker counts: {same[0] if same else 'not checked'}")
    print(ratio_line(f"workers={args.workers} / workers=1", runs[str(args.workers)], runs["1"]))


if __name__ == "__main__":
    main()
