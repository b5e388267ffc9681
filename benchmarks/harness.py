"""The one home of the benchmarks' measuring rules: load check, interleaved repeats, medians.

Every script under ``benchmarks/`` measures each side (baseline, mmlib, peers) at least
:data:`MIN_REPEATS` times, interleaved (A B C, A B C, ...) so that a change in the machine's
load hits every side alike, prints each side's median with its spread (min-max and the
half-range in per cent of the median) and the 1-minute load average seen during its runs,
and prints the ratio of medians as its last line. Before measuring, :func:`check_load` compares
``os.getloadavg()`` with ``os.cpu_count()``: above it the figures are flagged as taken on a
busy machine (``--busy refuse`` exits with status 3 instead).

Use from a script in this folder (run as ``python benchmarks/NAME.py``)::

    from harness import add_arguments, check_load, interleave, ratio_line, summarize

    add_arguments(parser)                      # --repeats, --busy
    check_load(args.busy)
    runs = interleave({"baseline": f, "mmlib": g}, args.repeats)
    for name, run in runs.items():
        print(summarize(name, run, "samples/s"))
    print(ratio_line("mmlib / baseline", runs["mmlib"], runs["baseline"]))
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

MIN_REPEATS = 3
BUSY_EXIT = 3


def add_arguments(parser: argparse.ArgumentParser, repeats: int = MIN_REPEATS) -> None:
    """Add ``--repeats`` (at least :data:`MIN_REPEATS`) and ``--busy {warn,refuse}``."""
    parser.add_argument(
        "--repeats",
        type=int,
        default=repeats,
        help=f"runs of each side, interleaved (>= {MIN_REPEATS}; default {repeats})",
    )
    parser.add_argument(
        "--busy",
        choices=("warn", "refuse"),
        default="warn",
        help="when the load average exceeds the core count: warn and measure "
        "(default) or refuse (exit 3)",
    )


def load() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def check_load(busy: str = "warn") -> float:
    """Print the load average against the core count; warn, or exit 3 for ``busy="refuse"``.

    Returns:
        The 1-minute load average.
    """
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, load average {one:.2f} (1 min), {five:.2f} (5 min)")
    if one > cores:
        msg = f"the machine is busy (load {one:.2f} > {cores} cores)"
        if busy == "refuse":
            print(
                f"refusing to measure: {msg}; rerun on a quiet machine or pass --busy warn",
                file=sys.stderr,
            )
            sys.exit(BUSY_EXIT)
        print(
            f"WARNING: {msg}: figures below are slowed by other processes, and unevenly "
            "across sides; rerun on a quiet machine"
        )
    return one


@dataclass
class Runs:
    """The measurements of one side: values and the load average at the end of each run."""

    values: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.values))

    @property
    def spread(self) -> tuple[float, float]:
        return float(np.min(self.values)), float(np.max(self.values))


def interleave(
    sides: Mapping[str, Callable[[], float]], repeats: int = MIN_REPEATS, warmup: bool = False
) -> dict[str, Runs]:
    """Run every side ``repeats`` times, in turn, and collect the value each run returns.

    Args:
        sides: name -> a function that measures once and returns its figure (seconds,
            samples/s, ...).
        repeats: runs per side; raised to :data:`MIN_REPEATS` if lower.
        warmup: run every side once, unrecorded, first. Defaults to False.

    Returns:
        name -> :class:`Runs`.
    """
    repeats = max(int(repeats), MIN_REPEATS)
    if warmup:
        for fn in sides.values():
            fn()
    out = {name: Runs() for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            out[name].values.append(float(fn()))
            out[name].loads.append(load())
    return out


def time_call(fn: Callable[[], object], sync: Callable[[], object] | None = None) -> float:
    """Wall seconds of one call of ``fn`` (``sync`` called after it, e.g. a CUDA sync)."""
    t = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t


def fmt(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, without exponent notation."""
    if value == 0 or not np.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - int(np.floor(np.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def summarize(name: str, runs: Runs, unit: str, scale: float = 1.0, digits: int = 3) -> str:
    """``name: median X UNIT (min, max, ±half-range %, n runs, load a-b)``; values × ``scale``."""
    lo, hi = (v * scale for v in runs.spread)
    med = runs.median * scale
    half = 100.0 * (hi - lo) / 2 / med if med else float("nan")
    return (
        f"{name}: median {fmt(med, digits)} {unit} (min {fmt(lo, digits)}, max "
        f"{fmt(hi, digits)}, ±{half:.0f} %, {len(runs.values)} runs, load "
        f"{min(runs.loads):.1f}-{max(runs.loads):.1f})"
    )


def ratio(num: Runs, den: Runs) -> float:
    """The ratio of medians ``num / den``."""
    return num.median / den.median


def ratio_line(label: str, num: Runs, den: Runs) -> str:
    """The last line of a benchmark: the ratio of medians, with the load it was measured at."""
    loads = num.loads + den.loads
    return (
        f"ratio of medians {label}: {ratio(num, den):.1f}x (load average {min(loads):.1f}-"
        f"{max(loads):.1f} on {os.cpu_count()} cores)"
    )
