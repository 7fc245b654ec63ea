"""One evaluation split: the records a model predicts, the ground truth, and the scorer of its protocol."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from datasets.annotations import PersonRecord, image_size, load_detections, load_records
from datasets.evaluation.metrics import load_coco, quiet
from datasets.evaluation.mpii import load_mpii_gt
from datasets.evaluation.scoring import CocoScorer, MpiiScorer
from datasets.skeletons import Skeleton
from datasets.validation import Dropped


@dataclass
class EvalSplit:
    records: list[PersonRecord]
    scorer: CocoScorer | MpiiScorer
    gt: object  # pycocotools COCO, or MpiiGroundTruth
    dropped: Dropped = field(default_factory=Dropped)  # entries left out on load (datasets/validation), logged


def load_eval_split(protocol: str, ann_file: str, image_dir: str, skeleton: Skeleton, max_samples: int = 0,
                    det_file: str = "", gt_mat: str = "", visibility_splits: bool = True) -> EvalSplit:
    """Records to predict and the scorer of one evaluation split.

    `protocol` is a dataset's `datasets.meta` protocol ("coco", "crowdpose", "mpii"). `max_samples` keeps whole
    images only, so the ground truth never holds persons that have no prediction; with `det_file` the records are
    the detector's boxes on the kept images instead of its persons (boxes of the other images are dropped). What
    the reference readers drop is counted in `.dropped` (and logged). Malformed files raise the
    datasets.validation errors (ValueError); a missing MPII `gt_mat` or a `det_file` on MPII raises ValueError."""
    if protocol == "mpii":
        if det_file:
            raise ValueError("--det-file does not apply to MPII: its protocol scores the annotated persons' boxes")
        if not gt_mat:
            raise ValueError("MPII evaluation needs data.val_gt, the mpii_gt_val.mat of the val split")
        gt = load_mpii_gt(gt_mat)
        head_boxes = gt.headboxes_src.transpose(2, 0, 1).reshape(-1, 4)  # (N, [x0, y0, x1, y1])
        records = load_records(ann_file, image_dir, skeleton, head_boxes=head_boxes)
        dropped = Dropped(records.dropped)
        if max_samples and len(records) > max_samples:
            records = records[:max_samples]
            gt = replace(gt, jnt_missing=gt.jnt_missing[:, :max_samples], pos_gt_src=gt.pos_gt_src[..., :max_samples],
                         headboxes_src=gt.headboxes_src[..., :max_samples])
        return EvalSplit(records, MpiiScorer(gt), gt, dropped)
    records = load_records(ann_file, image_dir, skeleton, protocol=protocol)
    dropped = Dropped(records.dropped)
    gt = load_coco(ann_file)
    files = {image["id"]: image["file_name"] for image in gt.dataset["images"]}  # before any subset: det ids check
    if max_samples and len(records) > max_samples:
        keep_images = {r.image_id for r in records[:max_samples]}
        records = [r for r in records if r.image_id in keep_images]
        gt.dataset["images"] = [i for i in gt.dataset["images"] if i["id"] in keep_images]
        gt.dataset["annotations"] = [a for a in gt.dataset["annotations"] if a["image_id"] in keep_images]
        with quiet():
            gt.createIndex()
    if det_file:
        keep = {image["id"] for image in gt.dataset["images"]}
        sizes = {image["id"]: image_size(image) for image in gt.dataset["images"]}
        records = load_detections(det_file, image_dir, files, skeleton, keep_images=keep, image_sizes=sizes)
        dropped.update(records.dropped)
    scorer = CocoScorer(gt, skeleton, crowd=protocol == "crowdpose", nms=bool(det_file),
                        visibility_splits=visibility_splits)
    return EvalSplit(records, scorer, gt, dropped)
