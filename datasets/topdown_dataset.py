from datasets.topdown.dataset import *  # noqa: F401,F403  shim: moved to datasets/topdown/dataset.py
from datasets.topdown.dataset import IMAGENET_MEAN, IMAGENET_STD, Augment, TopDownDataset, collate_skip_none  # noqa
