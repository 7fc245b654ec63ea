"""The top-down pipeline, MMPose-style: geometry (person box -> affine crop), augment (training draws, photometric
jitter), image_cache (decoded-region cache, reduced JPEG decoding), dataset (TopDownDataset: geometry -> augment ->
occlusions -> targets), codec (heatmap encode/decode in numpy and torch, normalisation, flip-test unflipping) and gpu
(the same pipeline batched on the accelerator).
"""
