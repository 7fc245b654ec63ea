"""COCO-format ground truth (COCO, OCHuman, CrowdPose, the synthetic set): every field the reference scorers read.

What reads what (so what must be there, typed):
- pycocotools `COCO.createIndex`: images' `id`, annotations' `id`, `image_id`, `category_id`, categories' `id`;
- `COCOeval(iouType="keypoints")`: `iscrowd`, `num_keypoints` (== 0 makes a person an ignore region), `keypoints`,
  `bbox` (a person without labelled joints is matched by distance to its box) and `area` (OKS's scale, and the
  small/medium/large ranges);
- the CrowdPose protocol (datasets/evaluation/crowdpose.py): the same without `area` (bbox_w x bbox_h x 0.53 in its
  place), plus each image's `crowdIndex`;
- the top-down readers (datasets/annotations.py): images' `file_name`, `width`, `height` and each person's box.

A field the scorer would mis-read stops the run (AnnotationError naming file, annotation and field): NaN or
Infinity in `keypoints` (a NaN OKS matches at every threshold), an `id` two annotations share (pycocotools keeps
one person twice), an `image_id` or `category_id` the file does not list (COCOeval drops those persons), a
`num_keypoints` of 0 on a labelled person (it becomes an ignore region), no labelled person at all (AP -1).
A person with labelled joints and a non-positive `area` matches only a prediction exactly on its joints (OKS divides
by the area): the trainer and the search refuse it; `datasets/evaluate.py` scores it as the reference does and warns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datasets.skeletons import Skeleton
from datasets.validation.base import (AnnotationError, box_extent, check_box, check_reference, is_id, is_number,
                                      numbers, require_fields)

# What json.loads makes of an integer or a string id: a fast path of base.is_id (exact for parsed JSON).
ID_TYPES = (int, str)
IMAGE_FIELDS = {"coco": ("id", "width", "height"), "crowdpose": ("id", "width", "height", "crowdIndex")}
ANNOTATION_FIELDS = {
    "coco": ("id", "image_id", "category_id", "keypoints", "num_keypoints", "iscrowd", "bbox", "area"),
    "crowdpose": ("id", "image_id", "category_id", "keypoints", "num_keypoints", "iscrowd", "bbox"),
}


@dataclass
class CocoGroundTruth:
    """A checked COCO-format file: images by id, and every annotation's parsed keypoints and box in file order,
    as one (N, K, 3) float32 `keypoint_array` and one (N, 4) float64 x y w h `box_array` (`keypoints` and `boxes`
    give them per annotation). `warnings`: what the reference scores as it is but a user should hear about."""

    images: dict
    keypoint_array: np.ndarray
    box_array: np.ndarray
    warnings: list = field(default_factory=list)

    @property
    def keypoints(self) -> list:
        """Each annotation's (K, 3) keypoints (views of `keypoint_array`)."""
        return list(self.keypoint_array)

    @property
    def boxes(self) -> list:
        """Each annotation's box as a tuple of 4 floats."""
        return [tuple(b) for b in self.box_array.tolist()]


def protocol_of(skeleton: Skeleton) -> str:
    """The COCO-format protocol ("coco" or "crowdpose") of the datasets that use `skeleton`."""
    from datasets import meta

    protocols = {m.protocol for m in meta.DATASETS.values() if m.skeleton is skeleton} - {"mpii"}
    return "crowdpose" if protocols == {"crowdpose"} else "coco"


def check_coco_ground_truth(data, source, skeleton: Skeleton, protocol: str = "coco",
                            nonpositive_area: str = "refuse", image_fields: tuple[str, ...] = ()) -> CocoGroundTruth:
    """Check a parsed COCO-format annotation file for `protocol` ("coco" or "crowdpose").

    `source` starts every message (the file, or "--gt FILE"). `nonpositive_area`: "refuse" (trainer, pre-flight)
    or "warn" (evaluate.py, which prints the reference's numbers). `image_fields`: fields an image needs besides
    the protocol's (the readers add "file_name"). Raises AnnotationError naming the file, entry and field."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise AnnotationError(f"{source}: not a COCO annotation file (needs 'images' and 'annotations' lists)")
    images = _check_images(data["images"], source, (*IMAGE_FIELDS[protocol], *image_fields))
    categories = _check_categories(data.get("categories"), source)
    keypoints, boxes = [], []  # filled only where the one-array conversions below fail
    seen: dict = {}
    bad_area = []
    fields = ANNOTATION_FIELDS[protocol]
    required = frozenset(fields)
    kpts_all = _numbers_of(data["annotations"], "keypoints", 3 * skeleton.num_keypoints)
    if kpts_all is not None:
        kpts_all = kpts_all.astype(np.float32).reshape(len(kpts_all), -1, 3)
        flags = kpts_all[:, :, 2]
        if not ((flags == 0) | (flags == 1) | (flags == 2)).all():
            kpts_all = None  # the per-annotation check names the entry
    labelled_all = np.count_nonzero(kpts_all[:, :, 2], axis=1).tolist() if kpts_all is not None else None
    boxes_all = _numbers_of(data["annotations"], "bbox", 4)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise AnnotationError(f"{source}: annotation #{i} is {type(ann).__name__}, expected an object")
        if not ann.keys() >= required:  # messages are formatted only when one is raised
            require_fields(ann, fields, f"{source}: annotation {ann.get('id', f'#{i}')}: ")
        ann_id = ann["id"]
        entry = f"annotation {ann_id}"
        if type(ann_id) not in ID_TYPES and not is_id(ann_id):
            raise AnnotationError(f"{source}: annotation #{i}: field 'id' {ann_id!r} is not an integer or string")
        if ann_id in seen:
            raise AnnotationError(f"{source}: {entry}: field 'id' {ann_id!r} is shared by annotations #{seen[ann_id]} "
                                  f"and #{i} (pycocotools would keep one person twice)")
        seen[ann_id] = i
        if not ((type(ann["image_id"]) in ID_TYPES or is_id(ann["image_id"])) and ann["image_id"] in images):
            check_reference(ann, "image_id", images, f"{source}: {entry}: ", "an image of the file")
        category = ann["category_id"]
        if not ((type(category) in ID_TYPES or is_id(category)) and category in categories):
            check_reference(ann, "category_id", categories, f"{source}: {entry}: ",
                            f"a category of the file ({sorted(categories, key=str)})")
        if ann["iscrowd"] not in (0, 1) or not isinstance(ann["iscrowd"], (int, bool)):
            raise AnnotationError(f"{source}: {entry}: field 'iscrowd' is {ann['iscrowd']!r}, expected 0 or 1")
        if kpts_all is not None:
            labelled = labelled_all[i]
        else:
            kpts = check_keypoints(ann["keypoints"], skeleton, source, entry)
            labelled = int(np.count_nonzero(kpts[:, 2]))
            keypoints.append(kpts)
        count = ann["num_keypoints"]
        if not (type(count) is int and count >= 0 and (count > 0) == (labelled > 0)):
            _check_num_keypoints(count, labelled, protocol, source, entry)  # raises, or CrowdPose's lower count
        if boxes_all is None:
            boxes.append(check_box(ann["bbox"], source, entry, "bbox"))
        if "area" in fields:
            if not is_number(ann["area"]):
                raise AnnotationError(f"{source}: {entry}: field 'area' is {ann['area']!r}, expected a finite number")
            if ann["area"] <= 0 and labelled and not ann["iscrowd"]:
                bad_area.append(ann_id)
        if "head_box" in ann:
            head = check_box(ann["head_box"], source, entry, "head_box", xywh=False)
            if min(box_extent(head, xywh=False)) <= 0:
                raise AnnotationError(f"{source}: {entry}: field 'head_box' has a negative or zero width/height: "
                                      f"{ann['head_box']}")
    k = skeleton.num_keypoints
    checked = CocoGroundTruth(
        images, kpts_all if kpts_all is not None else np.array(keypoints, np.float32).reshape(-1, k, 3),
        boxes_all if boxes_all is not None else np.array(boxes, np.float64).reshape(-1, 4))
    crowd = np.array([bool(a["iscrowd"]) for a in data["annotations"]], bool)
    if not ((checked.keypoint_array[:, :, 2] > 0).any(axis=1) & ~crowd).any():
        raise AnnotationError(f"{source}: no annotation has a labelled joint outside a crowd region: nothing to "
                              "train or score (the reference scorer would report AP -1)")
    if bad_area:
        message = (f"{source}: {len(bad_area)} annotation(s) with labelled joints have a non-positive field 'area' "
                   f"(first: annotation {bad_area[0]}); OKS divides by it, so any prediction off their joints by "
                   "a fraction of a pixel scores 0 on them")
        if nonpositive_area != "warn":
            raise AnnotationError(message)
        checked.warnings.append(message)
    return checked


def _numbers_of(entries: list, name: str, size: int) -> np.ndarray | None:
    """Field `name` of every entry as one (N, size) float64 array when each is a list of `size` finite numbers (as
    `base.numbers` accepts them one by one), else None: then the per-entry checks find and name the culprit. One
    conversion for all entries instead of one per entry (COCO train2017: 150k persons)."""
    values = [e.get(name) if isinstance(e, dict) else None for e in entries]
    if not values or not all(isinstance(v, list) and len(v) == size for v in values):
        return None
    if any(type(v[0]) is bool for v in values):  # a list of bools only would pass as 0/1 among numbers
        return None
    try:
        arr = np.array(values)
    except ValueError:
        return None
    if arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
        return None
    return arr.astype(np.float64)


def _check_images(images: list, source, fields: tuple[str, ...]) -> dict:
    by_id: dict = {}
    required = frozenset(fields)
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            raise AnnotationError(f"{source}: image #{i} is {type(image).__name__}, expected an object")
        if not image.keys() >= required:  # messages are formatted only when one is raised
            require_fields(image, fields, f"{source}: image {image.get('id', f'#{i}')}: ")
        entry = f"image {image['id']}"
        if not is_id(image["id"]):
            raise AnnotationError(f"{source}: image #{i}: field 'id' {image['id']!r} is not an integer or string")
        if image["id"] in by_id:
            raise AnnotationError(f"{source}: {entry}: field 'id' is shared by images #{by_id[image['id']][0]} and "
                                  f"#{i}")
        for name in ("width", "height"):
            if name in image and not (is_number(image[name]) and image[name] > 0):
                raise AnnotationError(f"{source}: {entry}: field {name!r} is {image[name]!r}, expected a positive "
                                      "number of pixels")
        if "crowdIndex" in fields and not is_number(image["crowdIndex"]):
            raise AnnotationError(f"{source}: {entry}: field 'crowdIndex' is {image['crowdIndex']!r}, expected a "
                                  "finite number")
        if "file_name" in fields and not isinstance(image["file_name"], str):
            raise AnnotationError(f"{source}: {entry}: field 'file_name' is not a string")
        by_id[image["id"]] = (i, image)
    return {key: image for key, (_, image) in by_id.items()}


def _check_categories(categories, source) -> set:
    """The category ids; COCOeval evaluates exactly these, so a file without any scores nothing."""
    if not isinstance(categories, list) or not categories:
        raise AnnotationError(f"{source}: field 'categories' missing or empty (COCOeval scores the categories the "
                              "file lists)")
    ids = set()
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not is_id(cat.get("id")):
            raise AnnotationError(f"{source}: category #{i}: field 'id' missing or not an integer or string")
        ids.add(cat["id"])
    return ids


def _check_num_keypoints(value, labelled: int, protocol: str, source, entry: str) -> None:
    """COCOeval ignores a person whose `num_keypoints` is 0. COCO counts every labelled joint; CrowdPose counts
    only the 12 limb joints (not head and neck), so there only a count above the labelled joints is wrong."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AnnotationError(f"{source}: {entry}: field 'num_keypoints' is {value!r}, expected a count")
    if (value > 0 and not labelled) or (protocol == "coco" and value == 0 and labelled):
        raise AnnotationError(f"{source}: {entry}: field 'num_keypoints' is {value} but {labelled} joints are "
                              "labelled (COCOeval ignores a person with num_keypoints 0)")


def check_keypoints(values, skeleton: Skeleton, source, entry: str) -> np.ndarray:
    """COCO's flat [x, y, v] * K list as a (K, 3) float32 array: finite numbers, v in {0, 1, 2}."""
    expected = 3 * skeleton.num_keypoints
    if not isinstance(values, list):
        raise AnnotationError(f"{source}: {entry}: field 'keypoints' is a {type(values).__name__}, expected a list "
                              f"of {expected} numbers")
    if len(values) != expected:
        raise AnnotationError(f"{source}: {entry}: field 'keypoints' has {len(values)} values, expected {expected} "
                              f"(x, y, v for the {skeleton.num_keypoints} {skeleton.name} keypoints)")
    arr = numbers(values)
    if arr is None:
        kind = "NaN or infinity" if all(isinstance(v, (int, float)) for v in values) else "a value that is not a number"
        raise AnnotationError(f"{source}: {entry}: field 'keypoints' holds {kind}")
    kpts = arr.astype(np.float32).reshape(-1, 3)
    flags = kpts[:, 2]
    if not ((flags == 0) | (flags == 1) | (flags == 2)).all():  # np.isin costs 10x more on 17 values
        raise AnnotationError(f"{source}: {entry}: field 'keypoints' has visibility flags "
                              f"{sorted(set(kpts[:, 2].tolist()))}, expected 0, 1 or 2")
    return kpts


def person_box_drop(box, image: dict, labelled: bool, crowd: bool, source, entry: str) -> str | None:
    """Why a person's box is left out of the records (None: kept). A box of zero or negative width or height, or
    one entirely outside its image, is dropped as HRNet's reader drops it after clipping to the image; on a
    person with labelled joints a degenerate box is a broken label, and AnnotationError names it."""
    w, h = box_extent(box)
    if w <= 0 or h <= 0:
        if labelled and not crowd:
            raise AnnotationError(f"{source}: {entry}: field 'bbox' has a negative or zero width/height: "
                                  f"{list(box)}")
        return "with a zero or negative box width/height"
    x, y = box[0], box[1]
    if x >= image["width"] or y >= image["height"] or x + w <= 0 or y + h <= 0:
        return "with a box entirely outside its image"
    return None
