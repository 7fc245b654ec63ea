from datasets.topdown.gpu import *  # noqa: F401,F403  shim: moved to datasets/topdown/gpu.py
from datasets.topdown.gpu import GpuTopDownBatcher, GpuTopDownSource, check_supported, collate_gpu  # noqa: F401
