"""The book's deviations page names settings that exist.

A renamed key fails here, not in a reader's run.
"""

from __future__ import annotations

import re
from pathlib import Path

from mmlib.engine.config import load_config
from mmlib.proxy.brainmvp import ObjectiveConfig

PAGE = Path(__file__).resolve().parents[1] / "book" / "deviations.md"
KEY = re.compile(r"`((?:optim|train|objective|schedule|data|model|eval)\.[a-z_]+)(?:[=:][^`]*)?`")


def test_the_deviations_page_is_in_the_table_of_contents() -> None:
    toc = (PAGE.parents[1] / "_toc.yml").read_text()
    assert "book/deviations" in toc


def test_every_setting_the_page_names_exists() -> None:
    keys = sorted(set(KEY.findall(PAGE.read_text())))
    assert len(keys) >= 8, keys  # the page names the switches that reproduce the official code
    pre, fine = load_config("paper"), load_config("paper", kind="finetune")
    missing = []
    for key in keys:
        section, name = key.split(".")
        if section == "objective":  # the objective's settings are ObjectiveConfig's fields
            if name not in ObjectiveConfig.__dataclass_fields__:
                missing.append(key)
        elif name not in pre.get(section, {}) and name not in fine.get(section, {}):
            missing.append(key)
    assert not missing, f"book/deviations.md names settings no config has: {missing}"
