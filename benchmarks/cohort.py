"""Subjects per second of the embedded cohort at the demo preset: 1 worker vs N workers.

Both runs simulate the same studies (the demo preset, every source scaled by ``--fraction``)
into fresh temporary folders in the same process tree, and check that both give identical
bytes. The last line is the speed-up of N workers over the serial baseline.

    .venv/bin/python benchmarks/cohort.py                  # a quarter of the demo cohort
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

from mmlib.data.phantom import cohort_spec, make_cohort, with_counts  # noqa: E402
from mmlib.data.phantom.anatomy import load_anatomy  # noqa: E402


def _same(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--fraction", type=float, default=0.25,
                        help="share of each source's subjects (default 0.25)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    spec = cohort_spec(args.preset)
    spec = with_counts(spec, **{s.name: max(1, round(s.n_subjects * args.fraction))
                                for s in spec.sources})
    n = sum(s.n_subjects for s in spec.sources)
    load_anatomy(spec.factor)  # built once, before timing (also shared by forked workers)
    rates = {}
    with tempfile.TemporaryDirectory(prefix="mmlib-bench-cohort-") as tmp:
        for workers in (1, args.workers):
            out = Path(tmp) / f"w{workers}"
            start = time.perf_counter()
            make_cohort(spec, out, seed=0, workers=workers)
            sec = time.perf_counter() - start
            rates[workers] = n / sec
            full = sum(s.n_subjects for s in cohort_spec(args.preset).sources) / rates[workers]
            print(f"{args.preset} x{args.fraction:g}: {n} studies, workers={workers}: "
                  f"{sec:.1f} s, {rates[workers]:.2f} studies/s "
                  f"(full {args.preset} cohort ~{full:.0f} s)")
        same = _same(Path(tmp) / "w1", Path(tmp) / f"w{args.workers}")
        print(f"identical bytes across worker counts: {same}")
    print(f"speed-up workers={args.workers} vs workers=1: {rates[args.workers] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
