"""mmlib.evaluate: metrics (segmentation, classification), robustness to missing modalities, reports.

- :mod:`mmlib.evaluate.segmentation`: Dice and HD95 per region with stated empty-case rules.
- :mod:`mmlib.evaluate.classification`: accuracy, balanced accuracy, AUC, F1.
- :mod:`mmlib.evaluate.robustness`: scores over every modality subset, template vs zero fill.
- :mod:`mmlib.evaluate.reports`: run folders → mean ± sd tables, paired differences, plots.
"""
