from datasets.evaluation.crowdpose import *  # noqa: F401,F403  shim until the merge; moved to datasets/evaluation/crowdpose.py
from datasets.evaluation.crowdpose import CROWDPOSE_STAT_NAMES, CrowdPoseEval, crowdpose_ap, split_by_crowd_index  # noqa: F401
