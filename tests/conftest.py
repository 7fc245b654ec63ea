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
