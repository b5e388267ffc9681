from __future__ import annotations

import pytest

from mmlib.modalities import MODALITIES, canonical, modality_index


@pytest.mark.parametrize(
    "alias, name",
    [
        ("t1n", "t1"),
        ("T1w", "t1"),
        ("t1ce", "t1c"),
        ("T1Gd", "t1c"),
        ("t2w", "t2"),
        ("T2", "t2"),
        ("t2f", "flair"),
        ("FLAIR", "flair"),
        ("MRA", "mra"),
        ("tof", "mra"),
        ("PD", "pd"),
        ("trace", "dwi"),
        ("DWI", "dwi"),
        ("ADC", "adc"),
        ("T2-FLAIR", "flair"),
    ],
)
def test_aliases(alias: str, name: str) -> None:
    assert canonical(alias) == name


def test_template_order() -> None:
    assert MODALITIES == ("flair", "t1", "t1c", "t2", "mra", "pd", "dwi", "adc")
    assert modality_index("t1ce") == 2


def test_unknown_name_names_the_file() -> None:
    with pytest.raises(
        ValueError, match=r"case7_swi\.nii\.gz: unknown modality 'swi'.*canonical: flair"
    ):
        canonical("swi", source="case7_swi.nii.gz")
