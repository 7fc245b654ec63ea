import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def dataset_cache(tmp_path_factory) -> Path:
    """A synthetic-dataset cache shared by the tests of one session (generation is deterministic)."""
    path = Path(os.environ.get("OCCPOSE_TEST_CACHE", tmp_path_factory.mktemp("occpose-cache")))
    return path
