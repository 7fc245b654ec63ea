from datasets.evaluation.mpii import *  # noqa: F401,F403  shim until the merge; moved to datasets/evaluation/mpii.py
from datasets.evaluation.mpii import (MPII_JOINT_NAMES, PCKH_KEYS, MpiiGroundTruth, load_mpii_gt,  # noqa: F401
                                      load_mpii_preds, mpii_pckh, pckh_table)
from datasets.validation import MpiiFormatError, check_mpii_preds as check_preds  # noqa: F401
