"""The region store (datasets/topdown/region_store.py, region_store_build.py) on real JPEGs: crops and heatmaps from
the store equal those decoded from the original images (reduced decoding included), an interrupted build resumes
keeping its finished shards, a corrupt or truncated entry is detected (the sample is decoded instead, counted) and
rebuilt, and bad input is refused before anything is written. Timings: tests/benchmarks/no_cache.py."""
import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from datasets.annotations import load_records
from datasets.skeletons import COCO17, MPII16
from datasets.topdown.augment import Augment
from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.dataset import TopDownDataset
from datasets.topdown import region_store
from datasets.topdown.region_store import RegionStore, shard_name
from datasets.topdown.region_store_build import build_store
from trainables.config import TrialConfig

CODEC = HeatmapCodec((256, 192))
# HRNet's COCO recipe (what the store's regions are planned for), flips and half-body crops included.
HRNET = Augment(scale_factor=0.35, rotation=45.0, rotation_p=0.6, flip_p=0.5, half_body_p=0.3)
SETTINGS = {"scale_factor": 0.35, "rotation": 45.0, "rotation_p": 0.6, "half_body_p": 0.3}


@pytest.fixture(scope="module")
def coco_dir(shared_data, tmp_path_factory):
    """The COCO fixture's images and annotations copied, so a test may damage its own copy."""
    root = tmp_path_factory.mktemp("coco")
    for path in (shared_data / "coco").iterdir():
        shutil.copy(path, root / path.name)
    return root


@pytest.fixture(scope="module")
def coco_store(coco_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "coco"
    summary = build_store("coco", coco_dir / "test_coco.json", coco_dir, out, SETTINGS, workers=2, shard_size=1)
    assert summary | {"seconds": 0} == {"entries": 4, "shards": 4, "built": 4, "kept": 0, "rebuilt": 0, "faulty": 0,
                                        "bytes": summary["bytes"], "seconds": 0}
    return out


def datasets(records, store, skeleton=COCO17, codec=CODEC, augment=HRNET):
    common = dict(train=True, augment=augment, seed=5)
    return (TopDownDataset(records, skeleton, codec, cache_mb=0, region_store=store, **common),
            TopDownDataset(records, skeleton, codec, cache_mb=0, **common),
            TopDownDataset(records, skeleton, codec, **common))


def assert_same_samples(stored, decoded, epochs):
    for epoch in range(epochs):
        stored.set_epoch(epoch)
        decoded.set_epoch(epoch)
        for i in range(len(stored)):
            a, b = stored[i], decoded[i]
            for key in ("image", "heatmaps", "target_weight"):
                assert torch.equal(a[key], b[key]), (epoch, i, key)


def test_crops_and_heatmaps_from_the_store_equal_decoding(coco_dir, coco_store):
    records = load_records(coco_dir / "test_coco.json", coco_dir, COCO17)
    stored, no_cache, cached = datasets(records, coco_store)
    assert_same_samples(stored, no_cache, epochs=3)
    assert_same_samples(stored, cached, epochs=1)  # the region cache's RGBA path: the same values
    assert (stored.store.hits, stored.store.fallbacks, stored.store.corrupt) == (4 * len(records), 0, 0)
    assert RegionStore(coco_store).verify()["corrupt"] == []


def test_reduced_entries_equal_reduced_decoding(shared_data, tmp_path):
    """MPII's large images at 256x256 are stored at libjpeg's 1/2 or 1/4 scale; crops equal the reduced decode's."""
    codec = HeatmapCodec((256, 256))
    augment = Augment(scale_factor=0.25, rotation=30.0, rotation_p=0.6, flip_p=0.5)
    settings = {"input_hw": [256, 256], "scale_factor": 0.25, "rotation": 30.0, "rotation_p": 0.6,
                "half_body_p": 0.0}
    build_store("mpii", shared_data / "mpii/test_mpii.json", shared_data / "mpii", tmp_path / "s", settings,
                workers=1)
    store = RegionStore(tmp_path / "s")
    assert store.columns["reduction"].max() > 1
    records = load_records(shared_data / "mpii/test_mpii.json", shared_data / "mpii", MPII16)
    stored, no_cache, _ = datasets(records, store, MPII16, codec, augment)
    assert_same_samples(stored, no_cache, epochs=3)
    assert stored.store.fallbacks == 0 and stored.store.hits == 3 * len(records)


def test_an_interrupted_build_resumes_and_keeps_its_finished_shards(coco_dir, coco_store, tmp_path):
    out = tmp_path / "store"
    first = build_store("coco", coco_dir / "test_coco.json", coco_dir, out, SETTINGS, workers=1, shard_size=1,
                        stop_after=1)
    assert (first["built"], sorted(p.name for p in out.iterdir())) == (1, [
        "manifest.json", shard_name(0, "bin"), shard_name(0, "json")])
    # A build killed mid-shard leaves a temporary file, or a data file whose index was never written.
    (out / f".{shard_name(1, 'bin')}.x1y2z3.tmp").write_bytes(b"partial")
    (out / shard_name(2, "bin")).write_bytes(b"\0" * 100)
    kept = (out / shard_name(0, "bin")).stat()
    records = load_records(coco_dir / "test_coco.json", coco_dir, COCO17)
    partial, no_cache, _ = datasets(records, out)  # a partial store serves what it has, decodes the rest
    assert_same_samples(partial, no_cache, epochs=1)
    assert partial.store.hits > 0 and partial.store.fallbacks > 0 and partial.store.corrupt == 0

    second = build_store("coco", coco_dir / "test_coco.json", coco_dir, out, SETTINGS, workers=2, shard_size=1)
    assert (second["built"], second["kept"], second["rebuilt"]) == (3, 1, 0)
    assert (out / shard_name(0, "bin")).stat().st_mtime_ns == kept.st_mtime_ns  # not redone
    assert not list(out.glob("*.tmp"))
    for shard in range(4):
        assert (out / shard_name(shard, "bin")).read_bytes() == (coco_store / shard_name(shard, "bin")).read_bytes()
    assert build_store("coco", coco_dir / "test_coco.json", coco_dir, out, SETTINGS, shard_size=1)["built"] == 0


def test_a_corrupt_entry_is_detected_decoded_instead_and_rebuilt(coco_dir, coco_store, tmp_path, capsys):
    out = tmp_path / "store"
    shutil.copytree(coco_store, out)
    damaged = out / shard_name(1, "bin")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern inside the entry's pixels
    damaged.write_bytes(bytes(data))
    (out / shard_name(3, "bin")).write_bytes((coco_store / shard_name(3, "bin")).read_bytes()[:1000])  # truncated
    assert RegionStore(out).verify()["corrupt"] == [1, 3]

    records = load_records(coco_dir / "test_coco.json", coco_dir, COCO17)
    stored, no_cache, _ = datasets(records, RegionStore(out, check="crc"))
    assert_same_samples(stored, no_cache, epochs=2)  # the damaged entries are decoded from the images
    assert stored.store.corrupt == 2  # each detected once, then not read again
    per_image = np.bincount(stored.records.file_index)
    assert stored.store.fallbacks == 2 * (per_image[1] + per_image[3])

    assert region_store.main(["verify", str(out)]) == 1
    assert json.loads(capsys.readouterr().out)["corrupt"] == 2
    assert region_store.main(["verify", str(out), "--repair", "--workers", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["repair"]["rebuilt"], report["repair"]["kept"], report["after_repair"]["corrupt"]) == (2, 2, [])
    assert damaged.read_bytes() == (coco_store / shard_name(1, "bin")).read_bytes()


def test_an_image_that_fails_its_check_is_skipped_as_without_a_store(coco_dir, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(coco_dir, images)
    records = load_records(images / "test_coco.json", images, COCO17)
    victim = records[0].file
    victim.write_bytes(victim.read_bytes()[:5000])  # truncated: no end-of-image marker
    summary = build_store("coco", images / "test_coco.json", images, tmp_path / "s", SETTINGS, workers=1)
    assert summary["faulty"] == 1
    stored, no_cache, _ = datasets(records, tmp_path / "s")
    out_stored = [stored[i] is None for i in range(len(records))]
    assert out_stored == [no_cache[i] is None for i in range(len(records))] and any(out_stored)
    assert stored.skipped == no_cache.skipped and "truncated" in next(iter(stored.faults.values()))


def test_bad_input_is_refused_before_anything_is_written(coco_dir, coco_store, tmp_path, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in coco_store.iterdir()}
    cli = ["build", "--dataset", "coco", "--images", str(coco_dir), "--workers", "1"]
    ann = ["--ann", str(coco_dir / "test_coco.json")]
    assert region_store.main(cli + ann + ["--out", str(coco_store), "--input-h", "128", "--input-w", "96"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in coco_store.iterdir()} == before
    with pytest.raises(SystemExit) as exit_:
        region_store.main(cli + ["--ann", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2 and "--ann" in capsys.readouterr().err and not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="data.region_store"):
        TrialConfig.from_flat({"data.region_store": str(tmp_path)}).validate()
    assert TrialConfig.from_flat({"data.region_store": str(coco_store)}).validate().data.region_store


def test_loader_workers_read_the_store_as_the_parent_does(coco_dir, coco_store):
    """Forked DataLoader workers share the parent's maps; a pickled dataset (spawned workers, Ray) reopens the store."""
    records = load_records(coco_dir / "test_coco.json", coco_dir, COCO17)
    stored, no_cache, _ = datasets(records, coco_store)
    stored.store.region(0)  # a shard mapped in the parent before the fork
    loader = torch.utils.data.DataLoader(stored, batch_size=4, num_workers=2, multiprocessing_context="fork")
    expected = torch.stack([no_cache[i]["image"] for i in range(len(records))])
    assert torch.equal(torch.cat([batch["image"] for batch in loader]), expected)
    revived = pickle.loads(pickle.dumps(stored))
    assert revived.store is not stored.store and revived.store.directory == stored.store.directory
    assert torch.equal(torch.stack([revived[i]["image"] for i in range(len(records))]), expected)
    assert revived.store.hits == len(records) and revived.store.fallbacks == 0


def test_a_torn_shard_index_counts_as_corrupt_and_is_repaired(coco_dir, coco_store, tmp_path, capsys):
    """A shard index that is not JSON (a torn copy, a damaged disk) or lacks a field is no traceback: its entries
    decode the original images, `verify` counts them corrupt (exit 1) and `--repair` rebuilds that shard."""
    out = tmp_path / "store"
    shutil.copytree(coco_store, out)
    (out / shard_name(2, "json")).write_text('{"entries": [{"fa')
    (out / shard_name(0, "json")).write_text(json.dumps({"size": 1, "entries": [{"fault": ""}]}))
    assert RegionStore(out).verify()["corrupt"] == [0, 2]
    assert region_store.main(["verify", str(out)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["corrupt"] == 2 and "Traceback" not in captured.err
    assert region_store.main(["verify", str(out), "--repair", "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["after_repair"]["corrupt"] == []
    assert (out / shard_name(2, "json")).read_bytes() == (coco_store / shard_name(2, "json")).read_bytes()


def test_an_annotation_file_of_another_dataset_exits_2_naming_it(coco_dir, tmp_path, capsys):
    """COCO's json built as MPII (48 keypoint values expected) is bad input: exit 2 with the validator's sentence,
    no traceback, no store created."""
    code = region_store.main(["build", "--dataset", "mpii", "--ann", str(coco_dir / "test_coco.json"), "--images",
                              str(coco_dir), "--out", str(tmp_path / "o"), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "test_coco.json" in err and "'keypoints'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_data_region_store_must_be_an_absolute_path_to_a_readable_store(coco_store, tmp_path, monkeypatch):
    """Trials run in their own directories: a relative data.region_store (found from here) would not be found there;
    a store whose manifest is torn is refused at validation, not in the trial."""
    monkeypatch.chdir(coco_store.parent)
    with pytest.raises(ValueError, match="data.region_store: coco must be an absolute path"):
        TrialConfig.from_flat({"data.region_store": "coco"}).validate()
    torn = tmp_path / "torn"
    shutil.copytree(coco_store, torn)
    (torn / "manifest.json").write_text('{"format"')
    with pytest.raises(ValueError, match="data.region_store: .*manifest.json: unreadable manifest"):
        TrialConfig.from_flat({"data.region_store": str(torn)}).validate()
