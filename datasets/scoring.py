from datasets.evaluation.scoring import *  # noqa: F401,F403  shim until the merge; moved to datasets/evaluation/scoring.py
from datasets.evaluation.scoring import (CocoScorer, MpiiScorer, Predictions, VISIBILITY_SUBSETS, coco_results,  # noqa: F401
                                         oks_nms, visibility_subset)
