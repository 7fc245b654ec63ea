from datasets.occlusion.attacks import *  # noqa: F401,F403  shim: moved to datasets/occlusion/attacks.py
from datasets.occlusion.attacks import ATTACKS, KeypointAttack, PartAttack, make_attack  # noqa: F401
