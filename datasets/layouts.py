"""Where each benchmark's files live under `--data-root`: the directory layouts of the official releases (as MMPose
and HRNet expect them), resolved to the annotation and image paths a trial needs.

    coco/       annotations/person_keypoints_{train2017,val2017}.json   train2017/  val2017/
    crowdpose/  annotations/crowdpose_{trainval,test}.json               images/
    ochuman/    annotations/ochuman_coco_format_{val,test}_range_0.00_1.00.json   images/
                (no training split: trials train on COCO, found with --train-root, default <data-root>/../coco)
    mpii/       annotations/mpii_{train,val}.json  annotations/mpii_gt_val.mat    images/

Splits a trial evaluates: `val` (the clean benchmark split) and, where the dataset has one, `val_occ` (an occluded
split: the synthetic set's heavy-occlusion images; OCHuman for ochuman, with COCO val2017 as `val`). Each
dataset's layout in words, as error messages show it, is `datasets.meta.get(name).layout`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import meta
from datasets.meta import DatasetMeta


@dataclass(frozen=True)
class SplitFiles:
    ann: Path
    images: Path


@dataclass(frozen=True)
class ResolvedLayout:
    meta: DatasetMeta
    train: SplitFiles
    val: SplitFiles
    val_occ: SplitFiles | None = None
    val_gt: Path | None = None  # MPII: the mpii_gt_val.mat ground truth (head boxes, the reference positions)


class LayoutError(ValueError):
    """A --data-root that does not hold the expected files; names what is missing and the layout expected."""


def resolve(name: str, data_root, train_root=None) -> ResolvedLayout:
    """The files of a real dataset under `data_root` (see the module docstring), checked to exist."""
    dataset = meta.get(name)
    root = Path(data_root).expanduser().resolve()
    if name == "synthetic":
        raise LayoutError("the synthetic dataset is generated, not found under --data-root")
    if not root.is_dir():
        raise LayoutError(f"--data-root {root}: no such directory (expected the {name} layout: {dataset.layout})")
    if name == "coco":
        layout = _coco(dataset, root)
    elif name == "crowdpose":
        split = lambda s: SplitFiles(root / "annotations" / f"crowdpose_{s}.json", root / "images")  # noqa: E731
        layout = ResolvedLayout(dataset, train=split("trainval"), val=split("test"))
    elif name == "ochuman":
        coco_root = Path(train_root).expanduser().resolve() if train_root else root.parent / "coco"
        coco = _coco(dataset, coco_root)
        occ = SplitFiles(root / "annotations" / "ochuman_coco_format_val_range_0.00_1.00.json", root / "images")
        layout = ResolvedLayout(dataset, train=coco.train, val=coco.val, val_occ=occ)
    else:  # mpii
        ann = root / "annotations"
        layout = ResolvedLayout(dataset, train=SplitFiles(ann / "mpii_train.json", root / "images"),
                                val=SplitFiles(ann / "mpii_val.json", root / "images"), val_gt=ann / "mpii_gt_val.mat")
    _check(layout, name)
    return layout


def _coco(dataset: DatasetMeta, root: Path) -> ResolvedLayout:
    ann = root / "annotations"
    return ResolvedLayout(dataset, train=SplitFiles(ann / "person_keypoints_train2017.json", root / "train2017"),
                          val=SplitFiles(ann / "person_keypoints_val2017.json", root / "val2017"))


def _check(layout: ResolvedLayout, name: str) -> None:
    splits = [s for s in (layout.train, layout.val, layout.val_occ) if s is not None]
    missing = [str(s.ann) for s in splits if not s.ann.is_file()]
    missing += sorted({str(s.images) for s in splits if not s.images.is_dir()})
    if layout.val_gt is not None and not layout.val_gt.is_file():
        missing.append(str(layout.val_gt))
    if missing:
        raise LayoutError(f"{name}: missing {', '.join(missing)} (expected layout: {layout.meta.layout})")

