"""Imaging: colour curves and conversions, photo I/O, registration, guided upsampling, exposure synthesis.

The bottom layer: these modules import nothing of `expocorr.sources`, `expocorr.stages` or the models.
"""
