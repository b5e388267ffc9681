"""mmlib.evaluate: inference, scores of fine-tuned runs, experiment grids, robustness, reports.

It reads the engine through its public functions and run folders only.

- :mod:`mmlib.evaluate.inference`: sliding-window prediction of whole volumes, test-time
  dropping of modalities (filled by :func:`mmlib.proxy.missing.fill_missing`).
- :mod:`mmlib.evaluate.scoring`: per-study test scores of a network, :func:`load_network` and
  :func:`score_run` (a trained run scored once: ``test_scores.csv``, ``predictions/``,
  ``results.json``'s ``test``, ``DONE``).
- :mod:`mmlib.evaluate.grid`: :func:`finetune_grid`, train and score every (init, fraction,
  seed) cell, reusing finished runs.
- :mod:`mmlib.evaluate.segmentation`: Dice and HD95 per region with stated empty-case rules.
- :mod:`mmlib.evaluate.lesions`: the BraTS lesion-wise metrics (panoptica, the official
  parameters): lesion Dice, detection F1, lesion counts.
- :mod:`mmlib.evaluate.challenge`: a folder of predicted label maps scored against references
  by study id (``mmlib evaluate segmentation``).
- :mod:`mmlib.evaluate.classification`: accuracy, balanced accuracy, AUC, F1.
- :mod:`mmlib.evaluate.robustness`: scores over every modality subset, template vs zero fill.
- :mod:`mmlib.evaluate.stats`: paired t intervals over seeds, the bootstrap over seeds and
  test studies, power analysis (seeds and studies a resolved answer takes), Wilson and DeLong
  intervals of accuracy and AUC.
- :mod:`mmlib.evaluate.reports`: run folders → summary tables, paired comparisons with
  intervals and verdicts (the headline of notebook 12).
- :mod:`mmlib.evaluate.tables`: what the book shows of them as tables (HTML, readable paired
  differences, the ablation beside the paper's figures).
- :mod:`mmlib.evaluate.figures`: plots of the reports and their captions, and the downstream
  chapters' figures built from a store and run folders.
"""
