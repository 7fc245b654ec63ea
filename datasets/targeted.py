from datasets.occlusion.targeted import *  # noqa: F401,F403  shim: moved to datasets/occlusion/targeted.py
from datasets.occlusion.targeted import TARGETED, KeypointOcclusion, PartOcclusion, targeted_augmentation  # noqa: F401
