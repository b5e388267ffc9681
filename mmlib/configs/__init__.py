"""Scale presets and experiment configs."""

from mmlib.configs.scales import SCALES, check_scale

__all__ = ["SCALES", "check_scale"]
