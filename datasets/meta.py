"""One entry per dataset: every per-dataset fact the platform uses, and the metric names built from them.

Adding a dataset is one `DatasetMeta` entry here plus its loader (a layout in `datasets/layouts.py` and, for a new
annotation format, a reader in `datasets/annotations.py`). The loaders, `datasets/evaluate.py`, the search's
default metric and progress line, the robustness sweep and the report all read these entries.

Metric names are `split/key` (`val/AP`, `val_occ/AP`, `val/O/AP`, `val/PCKh_0.5`; MLflow's convention in
DESIGN.md), built only by `metric_name`.
"""
from __future__ import annotations

from dataclasses import dataclass

from datasets.skeletons import COCO17, CROWDPOSE14, MPII16, Skeleton

PROTOCOLS = ("coco", "crowdpose", "mpii")  # how predictions are scored: OKS AP, CrowdPose's OKS AP, MPII PCKh
SPLITS = ("val", "val_occ")  # the evaluation splits a trial reports
VISIBILITY_SPLITS = ("O", "NO")  # occluded (v = 1) and visible (v = 2) ground-truth joints only
AP_KEY, PCKH_KEY = "AP", "PCKh_0.5"  # the main metric: OKS AP (COCO, CrowdPose protocols), PCKh@0.5 (MPII)


def metric_name(split: str, key: str, visibility: str = "") -> str:
    """`val/AP`, `val_occ/AP`, `val/O/AP`: the name every module logs, reads and shows a metric under."""
    return f"{split}/{visibility}/{key}" if visibility else f"{split}/{key}"


@dataclass(frozen=True)
class DatasetMeta:
    """What the platform knows about one dataset.

    name: the `--dataset` / `data.dataset` value. skeleton: keypoints, flip pairs, limbs, OKS sigmas, parts.
    protocol: one of PROTOCOLS. input_hw: the crop (height, width) in pixels its recipe trains at.
    has_val_occ: whether a trial also evaluates an occluded split `val_occ` (synthetic's heavy-occlusion images,
    OCHuman). has_occlusion_flags: whether its ground truth marks occluded joints (v = 1), which the O/NO split needs.
    layout: the files under `--data-root`, in words (datasets/layouts.py resolves them).
    """

    name: str
    skeleton: Skeleton
    protocol: str
    input_hw: tuple[int, int]
    has_val_occ: bool
    has_occlusion_flags: bool
    layout: str

    @property
    def clean_metric(self) -> str:
        """The metric of the clean benchmark split: OKS AP, or PCKh@0.5 for MPII."""
        return metric_name("val", self.main_key)

    @property
    def occluded_metric(self) -> str:
        """What a search maximises by default: the occluded split's main metric, else the main metric on the
        occluded joints (O), else (no occlusion labels) the clean metric."""
        if self.has_val_occ:
            return metric_name("val_occ", self.main_key)
        if self.has_occlusion_flags:
            return metric_name("val", self.main_key, "O")
        return self.clean_metric

    @property
    def main_key(self) -> str:
        return PCKH_KEY if self.protocol == "mpii" else AP_KEY

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS if self.has_val_occ else SPLITS[:1]


DATASETS: dict[str, DatasetMeta] = {meta.name: meta for meta in (
    DatasetMeta("synthetic", COCO17, "coco", (96, 64), has_val_occ=True, has_occlusion_flags=True,
                layout="generated (datasets/synthetic.py), cached under OCCPOSE_CACHE"),
    DatasetMeta("coco", COCO17, "coco", (256, 192), has_val_occ=False, has_occlusion_flags=True,
                layout="annotations/person_keypoints_{train2017,val2017}.json, train2017/, val2017/"),
    DatasetMeta("crowdpose", CROWDPOSE14, "crowdpose", (256, 192), has_val_occ=False, has_occlusion_flags=True,
                layout="annotations/crowdpose_{trainval,test}.json, images/"),
    DatasetMeta("ochuman", COCO17, "coco", (256, 192), has_val_occ=True, has_occlusion_flags=True,
                layout="annotations/ochuman_coco_format_val_range_0.00_1.00.json, images/; and COCO under "
                       "--train-root (default <data-root>/../coco)"),
    DatasetMeta("mpii", MPII16, "mpii", (256, 256), has_val_occ=False, has_occlusion_flags=False,
                layout="annotations/mpii_{train,val}.json, annotations/mpii_gt_val.mat, images/"),
)}


def get(name: str) -> DatasetMeta:
    """The entry of `name`; ValueError naming the choices when there is none."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}") from None
