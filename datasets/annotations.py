"""Person records from the annotation formats users bring: COCO-style json (COCO, OCHuman, CrowdPose, the synthetic
set), the HRNet/MMPose MPII json, and detector boxes in the COCO results format.

Every record is validated on load by `datasets/validation/`: a malformed annotation stops the run with an
AnnotationError naming the file, the annotation id and the field; entries the reference readers drop (degenerate
boxes, boxes outside their image) are left out, counted in the returned Records' `.dropped` and logged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets import validation
from datasets.skeletons import Skeleton
from datasets.validation import read_json

# HRNet's MPII convention: `scale` is the person height / 200 px, and the centre sits 15 px (x scale) too high;
# centre and joints are 1-based (MATLAB) pixels.
MPII_SCALE_PX = 200.0
MPII_CENTER_SHIFT = 15.0
MPII_ONE_BASED = 1.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonRecord:
    ann_id: int
    image_id: int
    file: Path
    bbox: tuple[float, float, float, float]  # x, y, w, h in image pixels
    keypoints: np.ndarray  # (K, 3): x, y 0-based pixels; v 0 unlabelled, 1 labelled but occluded, 2 visible
    head_box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 (PCKh's normaliser)
    score: float = 1.0  # the detector's box score; 1 for ground-truth boxes
    image_wh: tuple[int, int] | None = None  # the annotation's image `width`, `height`: what decoding must give


class Records(list):
    """The PersonRecords of one file, in file order, with `dropped`: the entries left out (datasets.validation's
    Dropped tally; empty when none was). A slice is a plain list."""

    def __init__(self, records=(), dropped: validation.Dropped | None = None):
        super().__init__(records)
        self.dropped = dropped if dropped is not None else validation.Dropped()


def _report(records: Records, source, what: str) -> Records:
    if records.dropped:
        log.warning("%s: %s", source, records.dropped.summary(what))
    return records


def load_records(ann_file, image_dir, skeleton: Skeleton, head_boxes: np.ndarray | None = None,
                 protocol: str | None = None) -> Records:
    """Records of every annotated person, in file order: COCO json (a dict) or the MPII json (a list).

    `protocol` ("coco" or "crowdpose"; by default the one of the datasets using `skeleton`) sets the fields a COCO
    file must carry (datasets/validation/coco.py). Entries the reference readers drop are counted in `.dropped`
    and logged; a malformed file raises AnnotationError naming the file, the entry and the field."""
    data = read_json(ann_file, "annotation file")
    validation.check_annotation_data(data, ann_file)
    if isinstance(data, list):
        return load_mpii_records(data, Path(ann_file), Path(image_dir), skeleton, head_boxes)
    return load_coco_records(data, Path(ann_file), Path(image_dir), skeleton, protocol)


def load_record_table(ann_file, image_dir, skeleton: Skeleton, head_boxes: np.ndarray | None = None,
                      protocol: str | None = None) -> "RecordTable":
    """`load_records` as a RecordTable (what TopDownDataset holds), with the same `.dropped`. A COCO file's table
    is built straight from the validator's arrays, without a PersonRecord per person (COCO train2017: 150k):
    the same arrays as RecordTable.from_records(load_records(...)) (tests/datasets/test_record_table_load.py)."""
    data = read_json(ann_file, "annotation file")
    validation.check_annotation_data(data, ann_file)
    if isinstance(data, list):
        records = load_mpii_records(data, Path(ann_file), Path(image_dir), skeleton, head_boxes)
        table = RecordTable.from_records(records)
        table.dropped = records.dropped
        return table
    if protocol not in ("coco", "crowdpose"):
        protocol = validation.protocol_of(skeleton)
    checked = validation.check_coco_ground_truth(data, ann_file, skeleton, protocol, image_fields=("file_name",))
    table = _coco_table(data["annotations"], checked, Path(ann_file), Path(image_dir))
    _report(table, ann_file, "annotations")
    return table


def _coco_table(anns: list, checked, ann_file: Path, image_dir: Path) -> "RecordTable":
    """load_coco_records' selection and drops (validation.person_box_drop), on whole arrays."""
    kpts, boxes = checked.keypoint_array, checked.box_array
    images = [checked.images[a["image_id"]] for a in anns]
    crowd = np.array([bool(a["iscrowd"]) for a in anns], bool)
    labelled = (kpts[:, :, 2] != 0).any(axis=1)
    x, y, w, h = boxes.T
    degenerate = (w <= 0) | (h <= 0)
    broken = np.flatnonzero(degenerate & labelled & ~crowd)
    if broken.size:  # raises the AnnotationError naming the annotation
        i = int(broken[0])
        validation.person_box_drop(tuple(boxes[i]), images[i], True, False, ann_file, f"annotation {anns[i]['id']}")
    width = np.array([image["width"] for image in images], np.float64).reshape(-1)
    height = np.array([image["height"] for image in images], np.float64).reshape(-1)
    outside = ~degenerate & ((x >= width) | (y >= height) | (x + w <= 0) | (y + h <= 0))
    dropped = validation.Dropped()
    for reason, mask in (("with a zero or negative box width/height", degenerate),
                         ("with a box entirely outside its image", outside)):
        if mask.any():
            dropped[reason] = int(mask.sum())
    keep = np.flatnonzero(~degenerate & ~outside & ~crowd & labelled).tolist()
    paths: dict[str, int] = {}
    files: dict = {}  # image id -> (file index, (width, height) or (0, 0))
    # str(image_dir / name) without a Path per image where the name is one plain component (COCO's): the same text
    base = str(image_dir)
    prefix = "" if base == "." else base.rstrip("/") + "/"
    file_index, sizes, heads = [], [], []
    for i in keep:
        ann = anns[i]
        if ann["image_id"] not in files:
            name = images[i]["file_name"]
            plain = name and "/" not in name and name not in (".", "..")
            path = prefix + name if plain else str(image_dir / name)
            files[ann["image_id"]] = (paths.setdefault(path, len(paths)), image_size(images[i]) or (0, 0))
        index, wh = files[ann["image_id"]]
        file_index.append(index)
        sizes.append(wh)
        heads.append(tuple(float(v) for v in ann["head_box"]) if "head_box" in ann else None)
    table = RecordTable(
        ann_id=_id_array([anns[i]["id"] for i in keep]), image_id=_id_array([anns[i]["image_id"] for i in keep]),
        file_index=np.array(file_index, np.int32), bbox=boxes[keep].reshape(-1, 4),
        keypoints=kpts[keep] if keep else np.zeros((0, 0, 3), np.float32),
        head_box=np.array([hb if hb is not None else (np.nan,) * 4 for hb in heads], np.float64).reshape(-1, 4),
        has_head_box=np.array([hb is not None for hb in heads], bool), score=np.ones(len(keep)),
        image_wh=np.array(sizes, np.int64).reshape(-1, 2), **_path_arrays(list(paths)))
    table.dropped = dropped
    return table


def load_coco_records(data: dict, ann_file: Path, image_dir: Path, skeleton: Skeleton,
                      protocol: str | None = None) -> Records:
    if protocol not in ("coco", "crowdpose"):
        protocol = validation.protocol_of(skeleton)
    checked = validation.check_coco_ground_truth(data, ann_file, skeleton, protocol, image_fields=("file_name",))
    records = Records()
    files: dict = {}  # image id -> (path, size): one Path per image, not per person
    for ann, keypoints, bbox in zip(data["annotations"], checked.keypoints, checked.boxes):
        image = checked.images[ann["image_id"]]
        labelled = bool(keypoints[:, 2].any())
        drop = validation.person_box_drop(bbox, image, labelled, bool(ann["iscrowd"]), ann_file,
                                          f"annotation {ann['id']}")
        if drop:
            records.dropped[drop] += 1
        if drop or ann["iscrowd"] or not labelled:
            continue  # crowd regions and persons without a labelled joint carry no training signal
        head_box = tuple(float(v) for v in ann["head_box"]) if "head_box" in ann else None
        if ann["image_id"] not in files:
            files[ann["image_id"]] = (image_dir / image["file_name"], image_size(image))
        file, wh = files[ann["image_id"]]
        records.append(PersonRecord(ann_id=ann["id"], image_id=ann["image_id"], file=file, bbox=bbox,
                                    keypoints=keypoints, head_box=head_box, image_wh=wh))
    return _report(records, ann_file, "annotations")


def load_mpii_records(data: list, ann_file: Path, image_dir: Path, skeleton: Skeleton,
                      head_boxes: np.ndarray | None = None) -> Records:
    """The HRNet/MMPose MPII json: `image`, `center`, `scale` (x 200 px), 1-based `joints` (16 x 2), `joints_vis`.

    The person box is HRNet's (lib/dataset/mpii.py): a square of side scale x 200 around the centre moved 15 x scale
    px down (the top-down padding of 1.25 then makes HRNet's crop). Centre and joints become 0-based alike. MPII's
    json has no occlusion flag, so a labelled joint is v=2 unless the record carries `joints_visible` (the official
    `is_visible`), then v=1 where 0.
    `head_boxes` (N, 4) x0 y0 x1 y1, in file order, come from the ground-truth .mat (`headboxes_src`).
    """
    validation.check_mpii_head_boxes(len(data), head_boxes, ann_file)
    image_ids: dict[str, int] = {}
    records = Records()
    for i, person in enumerate(data):
        joints, labelled, center, scale = validation.check_mpii_person(person, i, ann_file, skeleton)
        visibility = np.where(labelled > 0, 2, 0)
        if "joints_visible" in person:
            visibility = np.where((labelled > 0) & (np.asarray(person["joints_visible"]) == 0), 1, visibility)
        side = scale * MPII_SCALE_PX
        cx = center[0] - MPII_ONE_BASED
        cy = center[1] + MPII_CENTER_SHIFT * scale - MPII_ONE_BASED
        image_id = image_ids.setdefault(person["image"], len(image_ids))
        records.append(PersonRecord(
            ann_id=i, image_id=image_id, file=image_dir / person["image"],
            bbox=(cx - side / 2, cy - side / 2, side, side),
            keypoints=np.concatenate([joints - MPII_ONE_BASED, visibility[:, None]], axis=1).astype(np.float32),
            head_box=tuple(float(v) for v in head_boxes[i]) if head_boxes is not None else None,
        ))
    return records


def image_size(image: dict) -> tuple[int, int] | None:
    """A COCO image entry's (width, height) in whole pixels, None where the file does not give both."""
    if "width" in image and "height" in image:
        return int(round(float(image["width"]))), int(round(float(image["height"])))
    return None


def load_detections(det_file, image_dir, image_files: dict, skeleton: Skeleton, min_score: float = 0.0,
                    keep_images=None, image_sizes: dict | None = None) -> Records:
    """Person boxes from a detector in the COCO results format ({image_id, category_id, bbox, score}) as records
    without keypoint labels. `image_files` maps the ground truth's image ids to file names; `keep_images` (default:
    all of them) are the images evaluated; `image_sizes` their (width, height) where known. Boxes HRNet and MMPose
    would not score (another category, under `min_score`, zero width or height) and boxes of other images are
    counted in `.dropped` and logged."""
    dets = read_json(det_file, "--det-file")
    kept, dropped = validation.check_detections(dets, det_file, image_files, keep_images, min_score)
    records = Records(dropped=dropped)
    for i, det, bbox in kept:
        records.append(PersonRecord(
            ann_id=i, image_id=det["image_id"], file=Path(image_dir) / image_files[det["image_id"]], bbox=bbox,
            keypoints=np.zeros((skeleton.num_keypoints, 3), np.float32), score=float(det["score"]),
            image_wh=(image_sizes or {}).get(det["image_id"]),
        ))
    return _report(records, det_file, "detector boxes")


class RecordTable:
    """Person records as a few flat numpy arrays: what a data-loader worker indexes into.

    A list of PersonRecord objects is copied into every forked worker page by page as reference counts and the
    garbage collector touch its objects (copy-on-read); a handful of arrays is touched only through their data
    buffers, which stay shared with the parent. Indexing yields a PersonRecord built on demand (its keypoints a
    read-only view), so code that reads `records[i].bbox` or iterates the records keeps working.
    """

    _ARRAYS = ("ann_id", "image_id", "file_index", "bbox", "keypoints", "head_box", "has_head_box", "score",
               "image_wh")

    def __init__(self, ann_id, image_id, file_index, bbox, keypoints, head_box, has_head_box, score, image_wh,
                 path_blob, path_offsets):
        self.ann_id = ann_id  # (N,) int64 (or a fixed-width string array where ids are not integers)
        self.image_id = image_id  # (N,) likewise
        self.file_index = file_index  # (N,) int32 into the file paths
        self.bbox = bbox  # (N, 4) float64 x, y, w, h
        self.keypoints = keypoints  # (N, K, 3) float32
        self.head_box = head_box  # (N, 4) float64, NaN where the record has none
        self.has_head_box = has_head_box  # (N,) bool
        self.score = score  # (N,) float64
        self.image_wh = image_wh  # (N, 2) int64 the annotation's image width, height; 0, 0 where unknown
        self.path_blob = path_blob  # (B,) uint8: the distinct file paths, UTF-8, back to back
        self.path_offsets = path_offsets  # (F + 1,) int64: path f is path_blob[offsets[f]:offsets[f + 1]]
        for name in (*self._ARRAYS, "path_blob", "path_offsets"):
            getattr(self, name).flags.writeable = False

    @classmethod
    def from_records(cls, records) -> "RecordTable":
        if isinstance(records, RecordTable):
            return records
        records = list(records)
        paths: dict[str, int] = {}
        file_index = np.array([paths.setdefault(str(r.file), len(paths)) for r in records], dtype=np.int32)
        heads = [r.head_box for r in records]
        keypoints = np.stack([np.asarray(r.keypoints, np.float32) for r in records]) if records \
            else np.zeros((0, 0, 3), np.float32)
        return cls(
            ann_id=_id_array([r.ann_id for r in records]), image_id=_id_array([r.image_id for r in records]),
            file_index=file_index, bbox=np.array([r.bbox for r in records], dtype=np.float64).reshape(-1, 4),
            keypoints=keypoints,
            head_box=np.array([h if h is not None else (np.nan,) * 4 for h in heads], np.float64).reshape(-1, 4),
            has_head_box=np.array([h is not None for h in heads], dtype=bool),
            score=np.array([r.score for r in records], dtype=np.float64),
            image_wh=np.array([r.image_wh or (0, 0) for r in records], dtype=np.int64).reshape(-1, 2),
            **_path_arrays(list(paths)))

    def __len__(self) -> int:
        return len(self.file_index)

    @property
    def num_files(self) -> int:
        return len(self.path_offsets) - 1

    def path(self, file_index: int) -> str:
        start, stop = self.path_offsets[file_index], self.path_offsets[file_index + 1]
        return self.path_blob[start:stop].tobytes().decode("utf-8", "surrogateescape")

    def file(self, index: int) -> Path:
        return Path(self.path(int(self.file_index[index])))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range ({len(self)} records)")
        head = tuple(float(v) for v in self.head_box[index]) if self.has_head_box[index] else None
        return PersonRecord(ann_id=self.ann_id[index].item(), image_id=self.image_id[index].item(),
                            file=self.file(index), bbox=tuple(float(v) for v in self.bbox[index]),
                            keypoints=self.keypoints[index], head_box=head, score=float(self.score[index]),
                            image_wh=self.size_of(index))

    def size_of(self, index: int) -> tuple[int, int] | None:
        """The annotation's (width, height) of the record's image, None where the annotation does not give it."""
        w, h = (int(v) for v in self.image_wh[index])
        return (w, h) if w > 0 and h > 0 else None

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def take(self, indices) -> "RecordTable":
        """The records at `indices`, in that order (the file paths are shared)."""
        indices = np.asarray(indices, dtype=np.int64)
        return RecordTable(**{name: getattr(self, name)[indices] for name in self._ARRAYS},
                           path_blob=self.path_blob, path_offsets=self.path_offsets)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in (*self._ARRAYS, "path_blob", "path_offsets"))


def _path_arrays(paths: list[str]) -> dict:
    """RecordTable's path_blob and path_offsets of the distinct file paths, in order."""
    encoded = [p.encode("utf-8", "surrogateescape") for p in paths]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in encoded], dtype=np.int64)
    return {"path_blob": np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), "path_offsets": offsets}


def _id_array(ids: list) -> np.ndarray:
    """Integer ids as int64; anything else (a string id) as a fixed-width unicode array, still no Python objects."""
    if set(map(type, ids)) <= {int}:  # parsed JSON's integers: the check below, in one C pass
        return np.array(ids, dtype=np.int64)
    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        return np.array(ids, dtype=np.int64)
    return np.array([str(i) for i in ids])
