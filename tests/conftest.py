import os
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


@pytest.fixture(scope="session")
def real_layouts(shared_data, tmp_path_factory) -> Path:
    return official_layouts(shared_data, tmp_path_factory.mktemp("layouts"))


@pytest.fixture
def fresh_layouts(shared_data, tmp_path) -> Path:
    """Layouts of the test's own, for tests that replace a file in them."""
    return official_layouts(shared_data, tmp_path / "layouts")
