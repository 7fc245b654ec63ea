from datasets.evaluation.metrics import *  # noqa: F401,F403  shim until the merge; moved to datasets/evaluation/metrics.py
from datasets.evaluation.metrics import COCO_STAT_NAMES, SC_BIAS, head_size, load_coco, oks_ap, pckh, quiet  # noqa: F401
