"""`--verify`: whether a dataset's directory holds what a search will read, checked the way a search reads it.

1. the layout (`datasets/layouts.resolve`: every annotation file and image folder a trial opens);
2. the SHA-256 of every annotation file against the receipt written when it was extracted from a checked archive
   (files placed by hand have no receipt: said, not failed);
3. the number of image files in each folder whose count the release fixes (COCO train2017 118,287, val2017 5,000;
   MPII 24,984);
4. every annotation file through the validator the trainer uses (`datasets.annotations.load_records`), and every
   image its labelled persons reference present;
5. a seeded sample of those images decoded (the trainer's integrity check, `image_check.decode_bgr`: truncated
   files, and a size other than the annotation's `width` x `height` where it gives one);
6. MPII's `mpii_gt_val.mat` through the PCKh evaluation's reader, and the COCO person-detection file, where present, through the detector-box validator.

Each problem is one line naming the file.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from datasets import layouts, meta
from datasets.download.extract import RECEIPT, read_receipt
from datasets.download.fetch import sha256_of
from datasets.download.manifest import DatasetSource

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DET_FILE = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"


def verify(source: DatasetSource, dataset_dir: Path, sample: int = 100, log=print) -> list[str]:
    """The problems found in `dataset_dir` (empty: it verifies). `sample`: images decoded per annotation file
    (0: all of them)."""
    from datasets.annotations import load_records
    from datasets.validation import ValidationError

    name = source.name
    try:
        layout = layouts.resolve(name, dataset_dir)
    except layouts.LayoutError as err:
        return [str(err)]
    problems = _checksums(dataset_dir, log)
    for folder, expected in source.image_counts.items():
        count = sum(1 for p in (dataset_dir / folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        log(f"{folder}/: {count} images")
        if count != expected:
            problems.append(f"{dataset_dir / folder}: {count} image files, the release has {expected}")
    splits = {"train": layout.train, "val": layout.val, "val_occ": layout.val_occ}
    if name == "ochuman":
        splits = {"val_occ": layout.val_occ}  # train and val are COCO's: `--verify` them as coco
    seen = set()
    image_ids = {}
    for split, files in splits.items():
        if files is None or files.ann in seen:
            continue
        seen.add(files.ann)
        try:
            records = load_records(files.ann, files.images, meta.get(name).skeleton, protocol=meta.get(name).protocol)
        except ValidationError as err:
            problems.append(str(err))
            continue
        images = {r.file: r.image_wh for r in records}
        image_ids[split] = {r.image_id for r in records}
        missing = sorted(str(p) for p in images if not p.is_file())
        log(f"{files.ann.name}: {len(records)} labelled persons on {len(images)} images")
        if missing:
            problems.append(f"{files.ann}: {len(missing)} of its {len(images)} images are missing, e.g. "
                            f"{', '.join(missing[:3])}")
        problems += _decode_sample(images, set(missing), sample)
    if layout.val_gt is not None:
        problems += _mpii_gt(layout.val_gt, log)
    det_file = dataset_dir / DET_FILE
    if name == "coco" and det_file.is_file():
        problems += _detections(det_file, layout.val.ann, log)
    return problems


def _checksums(dataset_dir: Path, log) -> list[str]:
    recorded = read_receipt(dataset_dir)["files"]
    if not recorded:
        log(f"{dataset_dir}: no {RECEIPT} (files placed by hand): no recorded checksums to compare")
        return []
    problems = []
    for rel, digest in sorted(recorded.items()):
        path = dataset_dir / rel
        if not path.is_file():
            problems.append(f"{path}: missing (extracted and recorded in {RECEIPT})")
        elif sha256_of(path) != digest:
            problems.append(f"{path}: SHA-256 differs from the one recorded when it was extracted ({digest}): "
                            "the file was changed or damaged")
        else:
            log(f"{rel}: SHA-256 as recorded")
    return problems


def _decode_sample(images: dict, missing: set, sample: int) -> list[str]:
    from datasets.topdown.image_check import ImageFault, decode_bgr

    present = sorted(p for p in images if str(p) not in missing)
    chosen = present if not sample or sample >= len(present) else random.Random(0).sample(present, sample)
    problems = []
    for path in chosen:
        try:
            decode_bgr(str(path), images[path])
        except ImageFault as fault:
            problems.append(f"{path}: {fault}")
    return problems


def _mpii_gt(path: Path, log) -> list[str]:
    from datasets.evaluation.mpii import load_mpii_gt
    from datasets.validation import ValidationError

    try:
        gt = load_mpii_gt(path)
    except ValidationError as err:
        return [str(err)]
    log(f"{path.name}: the ground truth of {gt.num_persons} persons")
    return []


def _detections(det_file: Path, val_ann: Path, log) -> list[str]:
    from datasets.validation import ValidationError, check_detections

    try:
        dets = json.loads(det_file.read_text())
        gt_ids = {image["id"] for image in json.loads(val_ann.read_text())["images"]}
        kept, dropped = check_detections(dets, det_file, gt_ids)
    except (ValueError, OSError, KeyError, TypeError) as err:
        return [f"{det_file}: {err}"]
    except ValidationError as err:
        return [str(err)]
    log(f"{det_file.name}: {len(kept)} person boxes" + (f" ({dropped.summary('boxes')})" if dropped else ""))
    return []
