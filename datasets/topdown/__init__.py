"""The top-down pipeline, MMPose-style: geometry (person box -> affine crop), augment (training draws, photometric
jitter), image_cache (decoded-region cache, reduced JPEG decoding), dataset (TopDownDataset: geometry -> augment ->
occlusions -> targets), codec (heatmap encode/decode in numpy and torch, normalisation, flip-test unflipping) and gpu
(the same pipeline batched on the accelerator).

`from datasets.topdown import transform_points` keeps working: the package re-exports the geometry module, which
was `datasets/topdown.py`.
"""
from datasets.topdown.geometry import (CropGeometry, affine_matrix, bounds, box_corners, box_to_crop,  # noqa: F401
                                       flip_matrix, transform_points, warp_image)
