"""datasets/meta.py is the one owner of per-dataset facts: every entry is self-consistent, and its readers (the
layouts, evaluate.py, the search's default metrics, the pre-flight validator) take their facts from it."""
import pytest

from datasets import meta
from datasets.layouts import LayoutError, resolve
from datasets.skeletons import Skeleton

# The values the platform used before the facts had one owner; they must not drift.
DEFAULT_METRIC = {"synthetic": "val_occ/AP", "coco": "val/O/AP", "crowdpose": "val/O/AP", "ochuman": "val_occ/AP",
                  "mpii": "val/PCKh_0.5"}
INPUT_HW = {"synthetic": (96, 64), "coco": (256, 192), "crowdpose": (256, 192), "ochuman": (256, 192),
            "mpii": (256, 256)}
SKELETON_OF_PROTOCOL = {"coco": ("coco", 17), "crowdpose": ("crowdpose", 14), "mpii": ("mpii", 16)}
REAL = [name for name in meta.DATASETS if name != "synthetic"]


@pytest.mark.parametrize("name", list(meta.DATASETS))
def test_every_entry_is_consistent(name):
    entry = meta.get(name)
    assert entry.name == name and entry.layout
    assert isinstance(entry.skeleton, Skeleton) and entry.protocol in meta.PROTOCOLS
    assert (entry.skeleton.name, entry.skeleton.num_keypoints) == SKELETON_OF_PROTOCOL[entry.protocol]
    assert len(entry.skeleton.sigmas) == entry.skeleton.num_keypoints
    assert all(side % 32 == 0 for side in entry.input_hw)  # the backbones' stride (TrialConfig.validate)

    assert entry.main_key == ("PCKh_0.5" if entry.protocol == "mpii" else "AP")
    assert entry.clean_metric == meta.metric_name("val", entry.main_key)
    assert entry.splits == (("val", "val_occ") if entry.has_val_occ else ("val",))
    split, *_, key = entry.occluded_metric.split("/")
    assert split in entry.splits and key == entry.main_key
    if not entry.has_val_occ:
        assert entry.occluded_metric == (meta.metric_name("val", entry.main_key, "O") if entry.has_occlusion_flags
                                         else entry.clean_metric)

    assert entry.occluded_metric == DEFAULT_METRIC[name] and entry.input_hw == INPUT_HW[name]


def test_metric_names_and_unknown_dataset():
    assert meta.metric_name("val", "AP") == "val/AP"
    assert meta.metric_name("val", "AP", "O") == "val/O/AP"
    assert meta.metric_name("val_occ", "PCKh_0.5") == "val_occ/PCKh_0.5"
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*coco"):
        meta.get("nope")


def test_evaluate_cli_offers_every_real_dataset():
    from datasets import evaluate

    assert set(evaluate.DATASETS) == set(REAL)


@pytest.mark.parametrize("name", REAL)
def test_layout_help_comes_from_meta(name, tmp_path):
    with pytest.raises(LayoutError, match="no such directory") as err:
        resolve(name, tmp_path / "nowhere")
    assert meta.get(name).layout in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="missing") as err:
        resolve(name, tmp_path / "empty")
    assert str(err.value).endswith(f"(expected layout: {meta.get(name).layout})")


def test_resolved_layout_carries_the_entry(real_layouts):
    for name in REAL:
        assert resolve(name, real_layouts / name).meta is meta.get(name)
