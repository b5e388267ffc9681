"""Downstream tasks: what a fine-tuned network predicts, its networks, data and missing-modality fill.

:mod:`mmlib.downstream.regions` (BraTS TC/WT/ET, classes), :mod:`mmlib.downstream.missing`
(modality subsets, template or zero fill), :mod:`mmlib.downstream.models` (segmentation decoders
with skips, the classifier head), :mod:`mmlib.downstream.tasks` (the tasks of the embedded
cohort), :mod:`mmlib.downstream.data` (crops and volumes from the store). The training loop is
:mod:`mmlib.engine.finetune`; scoring and reports are :mod:`mmlib.evaluate`.
"""
