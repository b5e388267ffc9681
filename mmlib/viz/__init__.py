"""Visual inspection: napari for studies, proxy-task views, templates and segmentations;
ipywidgets slice viewers and static figures for the notebooks.

Modules (only :mod:`mmlib.viz._widget` builds Qt widgets; the rest imports no Qt):

- :mod:`mmlib.viz.data`: what there is to look at, as numpy arrays and affines (NIfTI study
  folders, store entries ``STORE::STUDY``, templates); run folders and their samples are read
  through :mod:`mmlib.runs`.
- :mod:`mmlib.viz.explore`: the proxy tasks on real sampler batches and runs (notebooks 03-05).
- :mod:`mmlib.viz.labels`: label schemes (BraTS <= 2021 / 2023, Decathlon, ISLES, tissue).
- :mod:`mmlib.viz.layers`: napari layer-data tuples with physical scales and affines.
- :mod:`mmlib.viz.napari`: ``open_study``, ``open_sample``, ``open_templates``,
  ``open_segmentation``, ``compare_runs``, grid mode, screenshots of a shown viewer.
- :mod:`mmlib.viz.widgets`: ipywidgets viewers that also leave a static figure for the book.
- :mod:`mmlib.viz.plots`: montages, overlays, sample grids and the one loss-curve plot.
- :mod:`mmlib.viz.display`: a display for napari (the session's own or a private Xvfb).
- ``napari.yaml`` + ``_reader``, ``_widget``, ``_sample_data``: the npe2 plugin (reader for
  study folders, samples and run folders; the *Run browser* dock widget; the MNI sample).

The command ``mmlib view PATH`` is :mod:`mmlib.cli.view` (it calls this room; never the reverse).
"""
