#!/usr/bin/env python
"""Data-loader worker memory across epochs: peak RSS, RSS, PSS and USS of each forked worker at the end of every
epoch, for the array-backed records (RecordTable, what TopDownDataset holds) and for the previous layout (a list
of PersonRecord objects that each sample reads), on ~100k records.

    python tests/benchmarks/loader_memory.py --json

Data: the COCO fixture's 12 persons replicated to --records records, spread over --images distinct image paths
(symlinks to the 4 fixture JPEGs in a temporary directory, so the decoded-region cache sees that many different
images and has to evict); without the fixture, synthetic COCO-like JPEGs (tests/benchmarks/pipeline.py). Each
epoch draws --samples-per-epoch random samples (a fresh random subset each epoch, as a larger dataset's epoch
would reach new records) through a torch DataLoader with --workers persistent forked workers; memory is read from
/proc/PID/status (VmHWM: peak RSS) and /proc/PID/smaps_rollup (RSS, PSS, USS = private clean + dirty) while the
workers idle at the end of the epoch.

Layouts:
  table  TopDownDataset as it is: the records live in a few numpy arrays; the parent drops the list it loaded.
  list   the same dataset, but each sample also reads a PersonRecord from a Python list (its bbox, keypoints and
         file, as the previous TopDownDataset did), and the parent keeps that list: the previous layout's
         copy-on-read pattern on the same pipeline.
Both use the same bounded region cache (--cache-mb per worker), so the difference is the records' layout.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import torch  # noqa: E402

from datasets.annotations import PersonRecord, load_records  # noqa: E402
from datasets.occlusion import LJAConfig, OcclusionConfig, build_occlusions  # noqa: E402
from datasets.skeletons import COCO17  # noqa: E402
from datasets.topdown.augment import Augment  # noqa: E402
from datasets.topdown.codec import HeatmapCodec  # noqa: E402
from datasets.topdown.dataset import TopDownDataset, collate_skip_none  # noqa: E402

MIB = 2**20


class MeasuredDataset(TopDownDataset):
    """Adds the worker's cache size to each sample, so the parent sees how full the workers' caches are."""

    def __getitem__(self, index):
        sample = super().__getitem__(index)
        if sample is not None:
            sample["cache_mib"] = self.cache.nbytes / MIB
        return sample


class ListLayoutDataset(MeasuredDataset):
    """The previous layout's access pattern: every sample reads its PersonRecord object from a Python list."""

    def __init__(self, record_list: list[PersonRecord], *args, **kwargs):
        super().__init__(record_list, *args, **kwargs)
        self.record_list = record_list

    def __getitem__(self, index):
        record = self.record_list[index]
        _ = (record.bbox, record.keypoints[:, 2].sum(), str(record.file), record.ann_id)
        return super().__getitem__(index)


def replicated_records(n: int, n_images: int, tmp: Path) -> tuple[list[PersonRecord], str]:
    shared = Path(os.environ.get("OCCPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if (shared / "coco/test_coco.json").is_file():
        base = load_records(shared / "coco/test_coco.json", shared / "coco", COCO17)
        data = "coco-fixture"
    else:
        from pipeline import synthetic_coco
        (tmp / "synthetic").mkdir()
        ann, images = synthetic_coco(tmp / "synthetic")
        base = load_records(ann, images, COCO17)
        data = "synthetic"
    sources = sorted({r.file for r in base})
    per_source = max(1, n_images // len(sources))
    links = {}
    for s, source in enumerate(sources):
        for k in range(per_source):
            link = tmp / f"img_{s}_{k:05d}{source.suffix}"
            link.symlink_to(source)
            links[source, k] = link
    records = []
    for t in range(n):
        r = base[t % len(base)]
        copy = t // len(base)
        records.append(PersonRecord(ann_id=t, image_id=copy * 1000 + r.image_id % 1000,
                                    file=links[r.file, copy % per_source], bbox=tuple(r.bbox),
                                    keypoints=r.keypoints.copy(), head_box=r.head_box, score=r.score))
    return records, f"{data}: {len(base)} persons x {n / len(base):.0f} over {len(links)} image paths"


def proc_memory(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    rollup = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        rollup[key] = int(value.split()[0])  # kB
    kib = 1024 / MIB
    return {"peak_rss_mib": round(int(status["VmHWM"].split()[0]) * kib, 1),
            "rss_mib": round(rollup["Rss"] * kib, 1), "pss_mib": round(rollup["Pss"] * kib, 1),
            "uss_mib": round((rollup["Private_Clean"] + rollup["Private_Dirty"]) * kib, 1)}


def children() -> list[int]:
    me, pids = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def run_layout(layout: str, args, tmp: Path) -> dict:
    records, data = replicated_records(args.records, args.images, tmp / layout)
    kwargs = dict(skeleton=COCO17, codec=HeatmapCodec((256, 192)), train=True,
                  augment=Augment(scale_factor=0.25, rotation=30.0, rotation_p=0.6, flip_p=0.5),
                  occlusions=build_occlusions(LJAConfig(), OcclusionConfig(), COCO17), cache_mb=args.cache_mb)
    if layout == "list":
        dataset = ListLayoutDataset(records, **kwargs)
    else:
        dataset = MeasuredDataset(records, **kwargs)
        del records  # the parent keeps only the arrays
    gc.collect()
    generator = torch.Generator().manual_seed(0)
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=args.samples_per_epoch, generator=generator)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=args.workers, persistent_workers=True,
                                         collate_fn=collate_skip_none, multiprocessing_context="fork")
    epochs = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)  # forked workers keep their own copy: the epoch only varies through the sampler
        cache = 0.0
        for batch in loader:
            cache = max(cache, float(batch["cache_mib"].max()))
        workers = [proc_memory(pid) for pid in children()]
        epochs.append({"epoch": epoch + 1, "workers": workers, "worker_cache_mib": round(cache, 1),
                       "max_peak_rss_mib": max(w["peak_rss_mib"] for w in workers),
                       "max_pss_mib": max(w["pss_mib"] for w in workers),
                       "max_uss_mib": max(w["uss_mib"] for w in workers),
                       "parent": proc_memory(os.getpid())})
        if not args.json:
            print(f"{layout:5s} epoch {epoch + 1}: workers peak RSS {[w['peak_rss_mib'] for w in workers]} MiB, "
                  f"PSS {[w['pss_mib'] for w in workers]}, USS {[w['uss_mib'] for w in workers]}, "
                  f"cache {cache:.1f} MiB", flush=True)
    seconds = time.perf_counter() - start
    del loader  # ends the workers
    second, last = epochs[min(1, len(epochs) - 1)], epochs[-1]
    return {"data": data, "records_table_mib": round(dataset.records.nbytes / MIB, 2), "seconds": round(seconds, 1),
            "epochs": epochs,
            "growth_epoch2_to_last_mib": {key: round(last[key] - second[key], 1)
                                          for key in ("max_peak_rss_mib", "max_pss_mib", "max_uss_mib")}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--images", type=int, default=200, help="distinct image paths the records point to")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--samples-per-epoch", type=int, default=4000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cache-mb", type=float, default=64.0, help="each worker's decoded-region cache budget")
    p.add_argument("--layouts", default="table,list")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    result = {"records": args.records, "image_paths": args.images, "epochs": args.epochs,
              "samples_per_epoch": args.samples_per_epoch, "workers": args.workers, "cache_mb": args.cache_mb,
              "layouts": {}}
    with tempfile.TemporaryDirectory(prefix="occpose-loader-memory-") as tmp:
        for layout in args.layouts.split(","):
            (Path(tmp) / layout).mkdir()
            result["layouts"][layout] = run_layout(layout, args, Path(tmp))
            gc.collect()
    summary = {layout: {"last_epoch_max_uss_mib": r["epochs"][-1]["max_uss_mib"],
                        "last_epoch_max_pss_mib": r["epochs"][-1]["max_pss_mib"],
                        "last_epoch_max_peak_rss_mib": r["epochs"][-1]["max_peak_rss_mib"],
                        "growth_epoch2_to_last_mib": r["growth_epoch2_to_last_mib"]}
               for layout, r in result["layouts"].items()}
    result["summary"] = summary
    if not args.json:
        for layout, s in summary.items():
            print(f"{layout:5s} last epoch: worker USS {s['last_epoch_max_uss_mib']} MiB, PSS "
                  f"{s['last_epoch_max_pss_mib']} MiB, peak RSS {s['last_epoch_max_peak_rss_mib']} MiB; growth epoch 2 "
                  f"-> last {s['growth_epoch2_to_last_mib']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
