import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def dataset_cache(tmp_path_factory) -> Path:
    """A synthetic-dataset cache shared by the tests of one session (generation is deterministic)."""
    path = Path(os.environ.get("OCCPOSE_TEST_CACHE", tmp_path_factory.mktemp("occpose-cache")))
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real fixtures beside the checkout (../shared/data), or OCCPOSE_SHARED_DATA; skipped where absent,
    as on a user's clone."""
    path = Path(os.environ.get("OCCPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real pose fixtures not found at {path} (set OCCPOSE_SHARED_DATA to their directory)")
    return path


def official_layouts(shared: Path, root: Path) -> Path:
    """The official directory layouts (datasets/layouts.py) built from the fixtures with symlinks; train and val
    share each fixture's annotation file."""
    links = {
        "coco/annotations/person_keypoints_train2017.json": "coco/test_coco.json",
        "coco/annotations/person_keypoints_val2017.json": "coco/test_coco.json",
        "coco/train2017": "coco", "coco/val2017": "coco",
        "crowdpose/annotations/crowdpose_trainval.json": "crowdpose/test_crowdpose.json",
        "crowdpose/annotations/crowdpose_test.json": "crowdpose/test_crowdpose.json",
        "crowdpose/images": "crowdpose",
        "ochuman/annotations/ochuman_coco_format_val_range_0.00_1.00.json": "ochuman/test_ochuman.json",
        "ochuman/images": "ochuman",
        "mpii/annotations/mpii_train.json": "mpii/test_mpii.json",
        "mpii/annotations/mpii_val.json": "mpii/test_mpii.json",
        "mpii/annotations/mpii_gt_val.mat": "mpii/mpii_gt_val_first5.mat",
        "mpii/images": "mpii",
    }
    for link, target in links.items():
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).symlink_to(shared / target)
    return root


def coco_with_unreadable_images(shared: Path, root: Path, corrupt: tuple[str, ...] = ("000000196141.jpg",),
                                 missing: tuple[str, ...] = ()) -> int:
    """The COCO fixture's official layout at `root` (train and val share its images and annotation file) with the
    `corrupt` images replaced by bytes no decoder reads and the `missing` ones left out; returns how many annotated
    persons (num_keypoints > 0) stand on those images."""
    import json
    import shutil

    (root / "annotations").mkdir(parents=True)
    images = root / "val2017"
    images.mkdir()
    data = json.loads((shared / "coco/test_coco.json").read_text())
    for entry in data["images"]:
        name = entry["file_name"]
        if name in corrupt:
            (images / name).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        elif name not in missing:
            shutil.copy(shared / "coco" / name, images / name)
    for split in ("train2017", "val2017"):
        (root / "annotations" / f"person_keypoints_{split}.json").symlink_to(shared / "coco/test_coco.json")
    (root / "train2017").symlink_to(images)
    broken = {i["id"] for i in data["images"] if i["file_name"] in (*corrupt, *missing)}
    return sum(1 for a in data["annotations"] if a["image_id"] in broken and a["num_keypoints"] > 0)


@pytest.fixture(scope="session")
def real_layouts(shared_data, tmp_path_factory) -> Path:
    return official_layouts(shared_data, tmp_path_factory.mktemp("layouts"))


@pytest.fixture
def fresh_layouts(shared_data, tmp_path) -> Path:
    """Layouts of the test's own, for tests that replace a file in them."""
    return official_layouts(shared_data, tmp_path / "layouts")


class SearchCLI:
    """search/run.py as every end-to-end test starts it: in `work`, tracked in work/mlflow.db (or `tracking_uri`),
    on the session's synthetic-dataset cache, unbuffered so that progress lines arrive as they are printed. `code` is
    the checkout whose search/run.py runs; `env` adds to (or replaces in) the environment."""

    def __init__(self, work: Path, dataset_cache: Path, code: Path = REPO_ROOT, tracking_uri: str | None = None,
                 **env: str):
        self.work, self.code = Path(work), Path(code)
        self.tracking_uri = tracking_uri or f"sqlite:///{self.work / 'mlflow.db'}"
        self.env = {**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri, "OCCPOSE_CACHE": str(dataset_cache),
                    "PYTHONUNBUFFERED": "1", **env}

    def command(self, *args) -> list[str]:
        return [sys.executable, str(self.code / "search" / "run.py"), *map(str, args)]

    def run(self, *args, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run to the end; stdout and stderr captured as text."""
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, cwd=self.work,
                              env=self.env)

    def start(self, *args) -> subprocess.Popen:
        """Start without waiting; stdout piped as text, stderr merged into it (read it with `wait_for_line`)."""
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=self.work, env=self.env)


@pytest.fixture
def search_cli(tmp_path, dataset_cache) -> SearchCLI:
    """search/run.py started in the test's own tmp_path (module-scoped fixtures build a `SearchCLI` themselves)."""
    return SearchCLI(tmp_path, dataset_cache)


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """The lines `proc` prints up to and including the first that holds `needle`; kills `proc` and fails, with the
    output's tail, when its output ends or `timeout` passes first."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    proc.kill()
    raise AssertionError(f"{needle!r} not seen; output tail:\n{''.join(seen[-40:])}")
