"""Tissue properties, sequence parameters and the signal equations of the embedded cohort.

Every voxel is a mixture of *compartments* (tissue fractions summing to at most 1; the rest is
air). Each compartment has literature relaxation times, proton density, diffusivity and
gadolinium uptake; each modality's signal is the fraction-weighted sum of the compartments'
signals (partial-volume mixing of magnetisation), computed with the usual equations:

* spin echo (T1, T2, PD, and T1c): ``S = PD · (1 - exp(-TR/T1)) · exp(-TE/T2)``;
* FLAIR, inversion recovery with TI chosen to null CSF:
  ``S = PD · |1 - 2 exp(-TI/T1) + exp(-TR/T1)| · exp(-TE/T2)``,
  ``TI = T1_csf · ln(2 / (1 + exp(-TR/T1_csf)))``;
* T1c: the T1 sequence after gadolinium, ``1/T1' = 1/T1 + r1 · C`` with ``r1 = 4 /s/mM``
  (Rohrer et al., Invest Radiol 2005) and a per-compartment concentration ``C`` (enhancing
  tumour, meningioma, vessels/sinus, choroid plexus);
* DWI (trace, b = 1000 s/mm²): ``S = S0 · exp(-b · ADC)`` with ``S0`` a spin-echo EPI (so T2
  shine-through happens), fat suppressed; the ADC map is then estimated from the noisy ``S0``
  and ``S_b`` images, in 1e-6 mm²/s as scanners write it;
* MRA, time of flight: a spoiled gradient echo (TR 25 ms, 20°) in which static tissue is
  saturated, ``S = PD · sin α · (1 - E1) / (1 - cos α · E1)``, while inflowing blood is fully
  relaxed, ``S = PD · sin α`` (bright vessels on a dark background).

Spin-echo sequences show flowing blood as a flow void (a factor of 0.25 on the blood signal).

Sources of the values (rounded; field strength ~3 T):
GM/WM T1 and T2: Wansapura et al., JMRI 1999 (T1 1331/832 ms, T2 110/80 ms);
CSF T1 ~4.0 s and T2 ~2 s: Rooney et al., MRM 2007; Lu et al., JMRI 2005;
proton densities: the BrainWeb phantom (Kwan, Evans & Pike, IEEE TMI 1999; Collins et al. 1998);
ADC of GM/WM/CSF 0.80/0.70/3.0e-3 mm²/s: Helenius et al., Acta Radiol 2002;
arterial blood T1 ~1.65 s: Lu et al., MRM 2004; fat T1 ~0.37 s: Gold et al., AJR 2004;
glioma and oedema ADC 1.0-1.4e-3, necrosis ~2e-3 mm²/s: Sugahara et al., JMRI 1999;
acute stroke ADC drop to ~55 % of normal: Schlaug et al., Neurology 1997; FLAIR becomes
visible after ~4.5 h (DWI-FLAIR mismatch): Thomalla et al., Lancet Neurol 2011.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

#: Compartments of the mixture model, in the order of the fraction matrix columns.
COMPARTMENTS: tuple[str, ...] = (
    "csf",
    "gm",
    "wm",
    "skull",
    "scalp",
    "choroid",
    "sinus",
    "vessel",
    "oedema",
    "enhancing",
    "necrosis",
    "nonenhancing",
    "meningioma",
    "stroke",
)

#: Gadolinium relaxivity r1 in /s/mM (Rohrer et al. 2005, ~1.5-3 T).
R1_GADOLINIUM = 4.0


@dataclass(frozen=True)
class Tissue:
    """MR properties of one compartment.

    Attributes:
        t1: longitudinal relaxation time in ms.
        t2: transverse relaxation time in ms.
        pd: proton density relative to CSF (1.0).
        adc: apparent diffusion coefficient in 1e-3 mm²/s.
        gd: gadolinium concentration after injection in mM (0 = no enhancement).
        flow: True for flowing blood (flow void on spin echo, inflow on time of flight).
        fat: True for fat (suppressed on DWI).
    """

    t1: float
    t2: float
    pd: float
    adc: float
    gd: float = 0.0
    flow: bool = False
    fat: bool = False


#: Literature properties of each compartment (see the module docstring for sources).
TISSUES: dict[str, Tissue] = {
    "csf": Tissue(t1=4000.0, t2=2000.0, pd=1.00, adc=3.0),
    "gm": Tissue(t1=1330.0, t2=110.0, pd=0.80, adc=0.80),
    "wm": Tissue(t1=830.0, t2=80.0, pd=0.70, adc=0.70),
    "skull": Tissue(t1=300.0, t2=2.0, pd=0.05, adc=0.2),
    "scalp": Tissue(t1=370.0, t2=130.0, pd=0.90, adc=0.05, fat=True),
    "choroid": Tissue(t1=1200.0, t2=100.0, pd=0.80, adc=1.2, gd=0.8),
    "sinus": Tissue(t1=1650.0, t2=150.0, pd=0.85, adc=2.0, gd=1.5, flow=True),
    "vessel": Tissue(t1=1650.0, t2=150.0, pd=0.85, adc=2.0, gd=0.8, flow=True),
    "oedema": Tissue(t1=1400.0, t2=180.0, pd=0.86, adc=1.40),
    "enhancing": Tissue(t1=1500.0, t2=130.0, pd=0.85, adc=1.00, gd=0.7),
    "necrosis": Tissue(t1=2600.0, t2=350.0, pd=0.95, adc=2.00),
    "nonenhancing": Tissue(t1=1600.0, t2=200.0, pd=0.88, adc=1.30, gd=0.03),
    "meningioma": Tissue(t1=1300.0, t2=115.0, pd=0.82, adc=0.80, gd=0.9),
    "stroke": Tissue(t1=1150.0, t2=100.0, pd=0.78, adc=0.42),
}


@dataclass(frozen=True)
class Sequence:
    """Acquisition parameters of one modality.

    Attributes:
        kind: ``"se"`` (spin echo), ``"ir"`` (FLAIR), ``"dwi"``, ``"adc"`` or ``"tof"``.
        tr: repetition time in ms.
        te: echo time in ms.
        contrast: True after gadolinium (T1c).
        b: diffusion weighting in s/mm² (DWI/ADC).
        flip: flip angle in degrees (TOF).
    """

    kind: str
    tr: float
    te: float
    contrast: bool = False
    b: float = 0.0
    flip: float = 90.0


#: Default sequence of each canonical modality.
SEQUENCES: dict[str, Sequence] = {
    "t1": Sequence("se", tr=500.0, te=12.0),
    "t1c": Sequence("se", tr=500.0, te=12.0, contrast=True),
    "t2": Sequence("se", tr=5000.0, te=100.0),
    "pd": Sequence("se", tr=5000.0, te=12.0),
    "flair": Sequence("ir", tr=9000.0, te=120.0),
    "dwi": Sequence("dwi", tr=5000.0, te=90.0, b=1000.0),
    "adc": Sequence("adc", tr=5000.0, te=90.0, b=1000.0),
    "mra": Sequence("tof", tr=25.0, te=3.5, flip=20.0),
}

FLOW_VOID = 0.25


def flair_ti(tr: float, t1_csf: float = TISSUES["csf"].t1) -> float:
    """Inversion time (ms) that nulls CSF for a FLAIR with repetition time ``tr``."""
    return t1_csf * math.log(2.0 / (1.0 + math.exp(-tr / t1_csf)))


def spin_echo(t: Tissue, tr: float, te: float, contrast: bool = False) -> float:
    """Spin-echo signal of a tissue (relative units)."""
    r1 = 1000.0 / t.t1 + (R1_GADOLINIUM * t.gd if contrast else 0.0)
    s = t.pd * (1.0 - math.exp(-tr * r1 / 1000.0)) * math.exp(-te / t.t2)
    if t.flow and not contrast:
        s *= FLOW_VOID
    return s


def signal(t: Tissue, seq: Sequence) -> tuple[float, float]:
    """Noise-free signal of one tissue: ``(S, S0)``.

    ``S0`` is the b = 0 signal for diffusion sequences and equals ``S`` otherwise.
    """
    if seq.kind == "se":
        s = spin_echo(t, seq.tr, seq.te, seq.contrast)
        return s, s
    if seq.kind == "ir":
        ti = flair_ti(seq.tr)
        s = t.pd * abs(1.0 - 2.0 * math.exp(-ti / t.t1) + math.exp(-seq.tr / t.t1))
        s *= math.exp(-seq.te / t.t2) * (FLOW_VOID if t.flow else 1.0)
        return s, s
    if seq.kind in ("dwi", "adc"):
        s0 = spin_echo(t, seq.tr, seq.te) * (0.08 if t.fat else 1.0)
        return s0 * math.exp(-seq.b * t.adc * 1e-3), s0
    if seq.kind == "tof":
        a = math.radians(seq.flip)
        if t.flow:
            s = t.pd * math.sin(a)
        else:
            e1 = math.exp(-seq.tr / t.t1)
            s = t.pd * math.sin(a) * (1 - e1) / (1 - math.cos(a) * e1)
        return s * math.exp(-seq.te / t.t2), s * math.exp(-seq.te / t.t2)
    raise ValueError(f"unknown sequence kind {seq.kind!r}; choose se, ir, dwi, adc or tof")


def jitter_tissues(rng: np.random.Generator, scale: float = 0.04) -> dict[str, Tissue]:
    """Per-subject tissue properties: the literature values times ``1 ± scale`` (log-normal)."""
    out = {}
    for name, t in TISSUES.items():
        k = np.exp(rng.normal(0.0, scale, size=4))
        out[name] = replace(t, t1=t.t1 * k[0], t2=t.t2 * k[1], pd=t.pd * k[2], adc=t.adc * k[3])
    return out


def stroke_tissue(base: Tissue, age_hours: float) -> Tissue:
    """Stroke properties at an age after onset: T2 rises over hours (FLAIR visibility), ADC
    stays low in the first week (cytotoxic oedema).

    Args:
        base: the subject's ``stroke`` compartment.
        age_hours: time since onset in hours.
    """
    rise = 1.0 - math.exp(-max(age_hours, 0.0) / 24.0)
    return replace(
        base,
        t2=base.t2 * (1.0 + 0.9 * rise),
        pd=base.pd * (1.0 + 0.08 * rise),
        t1=base.t1 * (1.0 + 0.25 * rise),
    )


def signal_table(
    tissues: dict[str, Tissue], modality: str, sequence: Sequence | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-compartment signals ``(S, S0)`` of a modality, each ``(len(COMPARTMENTS),)``."""
    seq = sequence or SEQUENCES[modality]
    rows = [signal(tissues[c], seq) for c in COMPARTMENTS]
    s = np.array([r[0] for r in rows], dtype=np.float32)
    s0 = np.array([r[1] for r in rows], dtype=np.float32)
    return s, s0
