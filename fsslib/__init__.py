"""fsslib: CLIP-era few-shot semantic segmentation, implemented and taught.

Jobs: :func:`fsslib.train.run`, :func:`fsslib.evaluate.run` (configs from
:func:`fsslib.config.make_config`), :mod:`fsslib.runs` for papermill grids.
"""
__version__ = "0.1.0"
