from datasets.topdown.codec import *  # noqa: F401,F403  shim: moved to datasets/topdown/codec.py
from datasets.topdown.codec import HeatmapCodec  # noqa: F401
