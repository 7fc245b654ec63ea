"""What `python -m datasets.download` fetches: each dataset's official files, where they come from, how each is
checked, and where its members go in the layout of `datasets/layouts.py`.

Checksums are the ones published for the files: the COCO 2017 zips' MD5s as dataset tools list them with their
URLs (PaddleDetection's `ppdet/utils/download.py`; the sizes are the server's Content-Length). Where no
checksum is published (MPII's image tarball, MMPose's MPII annotation tar, HRNet's COCO person detections) the
entry says so in `checksum_note`, and the download is checked by its archive's own integrity instead (every zip
member's CRC-32, every tar member read through gzip's CRC) and, for a json file, by parsing it; the checksums of
the files extracted from it are then recorded in the root's receipt, which `--verify` checks later.

A manifest file (`--manifest FILE`, the same JSON shape as MANIFEST) replaces the entries of the datasets it names:
a mirror, or the tests' local server. `--base-url URL` (or OCCPOSE_DOWNLOAD_BASE_URL) fetches every file from URL/
<file name> instead of its official address.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

COCO_IMAGES = "http://images.cocodataset.org"
MMPOSE = "https://download.openmmlab.com/mmpose/datasets"
NO_CHECKSUM = "no checksum is published for this file: its size (where known) and the archive's integrity are checked"


@dataclass(frozen=True)
class Archive:
    """One file to fetch. name: its file name (also its name under --base-url). kind: zip, tar (any compression
    tarfile reads) or file (stored as it is). md5: the published MD5, or None (then `checksum_note` says why).
    size: bytes, where known. members: path in the archive -> path under the dataset's directory; a key ending
    in "/" is a directory (moved whole), and a key also matches below a top-level folder of the archive
    (`mpii_annotations/annotations/mpii_train.json` for `annotations/mpii_train.json`). For kind "file", members
    is {name: destination}."""

    name: str
    url: str
    kind: str
    members: dict
    md5: str | None = None
    size: int | None = None
    checksum_note: str = ""


@dataclass(frozen=True)
class DatasetSource:
    """archives: what the tool downloads (none for a dataset behind a login or a drive link). image_counts: the
    number of image files each image folder holds in the full release (checked by --verify). manual: the steps a
    user follows where the files cannot be fetched. checked_files: the files whose checksum the receipt records."""

    name: str
    archives: tuple[Archive, ...] = ()
    image_counts: dict = field(default_factory=dict)
    manual: str = ""


def _coco() -> DatasetSource:
    zips = [
        Archive("train2017.zip", f"{COCO_IMAGES}/zips/train2017.zip", "zip", {"train2017/": "train2017/"},
                md5="cced6f7f71b7629ddf16f17bbcfab6b2", size=19336861798),
        Archive("val2017.zip", f"{COCO_IMAGES}/zips/val2017.zip", "zip", {"val2017/": "val2017/"},
                md5="442b8da7639aecaf257c1dceb8ba8c80", size=815585330),
        Archive("annotations_trainval2017.zip", f"{COCO_IMAGES}/annotations/annotations_trainval2017.zip", "zip",
                {"annotations/person_keypoints_train2017.json": "annotations/person_keypoints_train2017.json",
                 "annotations/person_keypoints_val2017.json": "annotations/person_keypoints_val2017.json"},
                md5="f4bbac642086de4f52a3fdda2de5fa2c", size=252907541),
        # HRNet's Faster R-CNN person boxes (56.4 AP on COCO val2017), in HRNet's public Google Drive folder
        # https://drive.google.com/drive/folders/1fRUDNUDxe9fjqcRZ2bnF_TKMlO0nB_dk (MMPose's docs link the same).
        Archive("COCO_val2017_detections_AP_H_56_person.json",
                "https://drive.google.com/uc?export=download&id=1ygw57X-mh0QBfENB-U5DsuSauGIu-8RB", "file",
                {"COCO_val2017_detections_AP_H_56_person.json":
                 "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"},
                checksum_note="HRNet and MMPose publish no checksum for it: it is checked to parse as a COCO "
                              "results list of person boxes"),
    ]
    return DatasetSource("coco", tuple(zips), image_counts={"train2017": 118287, "val2017": 5000})


def _mpii() -> DatasetSource:
    names = ("mpii_train.json", "mpii_val.json", "mpii_gt_val.mat")
    return DatasetSource("mpii", (
        Archive("mpii_human_pose_v1.tar.gz",
                "https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1.tar.gz", "tar",
                {"images/": "images/"}, checksum_note=NO_CHECKSUM),
        # MMPose's conversion of the MPII annotations to HRNet's json, with the official mpii_gt_val.mat.
        Archive("mpii_annotations.tar", f"{MMPOSE}/mpii_annotations.tar", "tar",
                {f"annotations/{n}": f"annotations/{n}" for n in names}, checksum_note=NO_CHECKSUM),
    ), image_counts={"images": 24984})


CROWDPOSE_STEPS = """\
CrowdPose is distributed through Google Drive links on its project page; fetch it by hand:
  1. Open https://github.com/Jeff-sjtu/CrowdPose (section "Dataset") and download images.zip and the
     annotations: crowdpose_trainval.json and crowdpose_test.json.
  2. mkdir -p {root}/crowdpose/annotations
     unzip images.zip -d {root}/crowdpose                  # gives {root}/crowdpose/images/*.jpg (20,000 images)
     mv crowdpose_trainval.json crowdpose_test.json {root}/crowdpose/annotations/
  3. Optional detector boxes (MMPose's YOLOv3 results for the test split):
     https://download.openmmlab.com/mmpose/datasets/crowdpose_annotations.tar holds det_for_crowd_test_*.json.
  4. Check it: python -m datasets.download crowdpose --verify {root}"""

OCHUMAN_STEPS = """\
OCHuman is distributed through Google Drive links; fetch it by hand:
  1. Open https://github.com/liruilong940607/OCHumanApi and download images.zip and the COCO-format
     annotations ochuman_coco_format_val_range_0.00_1.00.json (and ..._test_range_0.00_1.00.json).
  2. mkdir -p {root}/ochuman/annotations
     unzip images.zip -d {root}/ochuman                    # gives {root}/ochuman/images/*.jpg
     mv ochuman_coco_format_*_range_0.00_1.00.json {root}/ochuman/annotations/
  3. OCHuman has no training split: trials train on COCO, found at {root}/coco
     (python -m datasets.download coco --root {root}).
  4. Check it: python -m datasets.download ochuman --verify {root}"""

MANIFEST = {
    "coco": _coco(),
    "mpii": _mpii(),
    "crowdpose": DatasetSource("crowdpose", manual=CROWDPOSE_STEPS),
    "ochuman": DatasetSource("ochuman", manual=OCHUMAN_STEPS),
}
DATASETS = tuple(MANIFEST)


class ManifestError(ValueError):
    """A --manifest file that cannot be used; says which file and entry."""


def load(path: Path | str | None) -> dict[str, DatasetSource]:
    """MANIFEST with the entries of the JSON file at `path` (if any) replacing those of the datasets it names.

    The file is {dataset: {"archives": [{"name", "url", "kind", "members", "md5"?, "size"?, "checksum_note"?}],
    "image_counts": {folder: count}?, "manual": text?}}."""
    sources = dict(MANIFEST)
    if path is None:
        return sources
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ManifestError(f"--manifest {path}: cannot be read as JSON ({err})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"--manifest {path}: expected an object {{dataset: entry}}")
    for name, entry in data.items():
        if name not in MANIFEST:
            raise ManifestError(f"--manifest {path}: unknown dataset {name!r} (known: {', '.join(DATASETS)})")
        try:
            sources[name] = _source(name, entry)
        except ValueError as err:
            raise ManifestError(f"--manifest {path}: entry {name!r}: {err}") from None
    return sources


def _kind(value) -> str:
    """How a JSON value is named in a message: 'a list', 'a number', 'null'."""
    return {dict: "an object", list: "a list", str: "a text", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _expect(value, at: str, want: str, ok: bool):
    """`value`, or a ValueError naming the field `at` and what it should have been."""
    if not ok:
        raise ValueError(f"field {at!r}: expected {want}, got {_kind(value)} ({json.dumps(value)[:80]})")
    return value


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _source(name: str, entry) -> DatasetSource:
    """One manifest entry, each field checked for its JSON type (ValueError naming the field)."""
    if not isinstance(entry, dict):
        raise ValueError(f'expected an object {{"archives", "image_counts", "manual"}}, got {_kind(entry)}')
    if unknown := sorted(set(entry) - {"archives", "image_counts", "manual"}):
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))} (known: archives, image_counts, manual)")
    archives = _expect(entry.get("archives", []), "archives", "a list of archive objects",
                       isinstance(entry.get("archives", []), list))
    counts = entry.get("image_counts", {})
    _expect(counts, "image_counts", "an object {folder: image count}", isinstance(counts, dict))
    for folder, count in counts.items():
        _expect(count, f"image_counts.{folder}", "a count (an integer >= 0)", _is_count(count))
    manual = _expect(entry.get("manual", ""), "manual", "a text", isinstance(entry.get("manual", ""), str))
    parsed = tuple(_archive(a, f"archives[{i}]") for i, a in enumerate(archives))
    names = [a.name for a in parsed]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"field 'archives': two archives are named {dupes[0]!r} (each is saved under its name)")
    if not parsed and not manual:
        raise ValueError("field 'archives': empty, and no 'manual' steps say how to get the files")
    return DatasetSource(name, parsed, dict(counts), manual)


def _archive(a, at: str = "archive") -> Archive:
    _expect(a, at, 'an object {"name", "url", "kind", "members", ...}', isinstance(a, dict))
    missing = [k for k in ("name", "url", "kind", "members") if k not in a]
    if missing:
        raise ValueError(f"{at} ({a.get('name', '?')!r}) lacks {', '.join(missing)}")
    for key in ("name", "url", "kind", "checksum_note"):
        if key in a:
            _expect(a[key], f"{at}.{key}", "a text", isinstance(a[key], str))
    if not a["name"] or a["name"] in (".", "..") or "/" in a["name"] or "\\" in a["name"]:
        raise ValueError(f"field {at + '.name'!r}: must be a plain file name (no '/', not '' or '..'), "
                         f"not {a['name']!r}")
    if a["url"].split("://", 1)[0].lower() not in ("http", "https", "file") or "://" not in a["url"]:
        raise ValueError(f"field {at + '.url'!r}: must be an http://, https:// or file:// URL, not {a['url']!r}")
    if a["kind"] not in ("zip", "tar", "file"):
        raise ValueError(f"field {at + '.kind'!r}: must be zip, tar or file, not {a['kind']!r}")
    members = a["members"]
    _expect(members, f"{at}.members", "an object {archive member: path under the dataset root}",
            isinstance(members, dict) and all(isinstance(v, str) for v in members.values()))
    if not members:
        raise ValueError(f"field {at + '.members'!r}: names no member to keep")
    for dest in members.values():
        parts = PurePosixPath(dest).parts
        if not dest or dest.startswith(("/", "\\")) or ".." in parts or "\\" in dest:
            raise ValueError(f"field {at + '.members'!r}: {dest!r} is not a relative path inside the dataset's "
                             f"directory")
    md5 = a.get("md5")
    if md5 is not None and not (isinstance(md5, str) and len(md5) == 32
                                and all(c in "0123456789abcdef" for c in md5.lower())):
        raise ValueError(f"field {at + '.md5'!r}: must be 32 hex digits, not {json.dumps(md5)[:80]}")
    if a.get("size") is not None:
        _expect(a["size"], f"{at}.size", "a size in bytes (an integer >= 0)", _is_count(a["size"]))
    return Archive(a["name"], a["url"], a["kind"], dict(members), md5, a.get("size"),
                   a.get("checksum_note", "" if md5 else NO_CHECKSUM))


def with_base_url(source: DatasetSource, base_url: str | None) -> DatasetSource:
    """`source` with every file fetched from `base_url`/<file name> (a mirror holding the files side by side)."""
    if not base_url:
        return source
    archives = tuple(Archive(**{**a.__dict__, "url": f"{base_url.rstrip('/')}/{a.name}"}) for a in source.archives)
    return DatasetSource(source.name, archives, source.image_counts, source.manual)
