from datasets.evaluation.mean_pose import *  # noqa: F401,F403  shim until the merge; moved to datasets/evaluation/mean_pose.py
from datasets.evaluation.mean_pose import fit_mean_pose, mean_pose_ap, mean_pose_results  # noqa: F401
