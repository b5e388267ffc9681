from __future__ import annotations

import json
import math

import numpy as np

from mmlib.evaluate.reports import json_safe, write_results


def test_undefined_numbers_become_null(tmp_path) -> None:
    data = {"sd": float("nan"), "auc": np.float32("nan"), "n": np.int64(3), "ok": np.bool_(True),
            "vals": np.array([1.5, np.inf]), "nested": {"m": np.float64(0.25)}}
    path = write_results(tmp_path / "results.json", data)
    back = json.loads(path.read_text())  # strict JSON: no NaN tokens
    assert back == {"sd": None, "auc": None, "n": 3, "ok": True, "vals": [1.5, None], "nested": {"m": 0.25}}
    assert "NaN" not in path.read_text()
    assert json_safe(0.5) == 0.5 and not math.isnan(json_safe(0.5))
