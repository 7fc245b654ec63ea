"""Evaluation in one place: the benchmark protocols and everything that feeds them.

    metrics.py    OKS AP/AR through pycocotools (COCO, OCHuman, synthetic) and PCKh
    crowdpose.py  the CrowdPose protocol (xtcocotools' 'keypoints_crowd', reproduced on pycocotools)
    mpii.py       the official MPII PCKh table against mpii_gt_val.mat
    scoring.py    Predictions, the per-protocol scorers, O/NO (occluded / visible joints) splits, OKS-NMS
    splits.py     load_eval_split: one evaluation split's records, ground truth and scorer
    mean_pose.py  the mean-pose-in-box baseline

Input files are checked by datasets/validation/ (the one validator); datasets/evaluate.py is the command-line tool.
"""
