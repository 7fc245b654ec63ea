#!/usr/bin/env python
"""COCO at full size, without the images: annotation loading, the first training batch and one epoch's evaluation
cost outside the model, on generated files of COCO 2017's size.

    python tests/benchmarks/coco_scale.py --json [--workers 4] [--keep DIR]

Data (generated in a temporary directory, or --keep DIR): `person_keypoints_train2017.json` with 149,813 labelled
persons over 56,599 image entries (HRNet's COCO train2017 figures: the images that hold a labelled person),
`person_keypoints_val2017.json` with 6,352 persons over 5,000 images (2,346 of them with persons) and
`COCO_val2017_detections_AP_H_56_person.json` with 104,125 detector boxes (HRNet's file). Every person is one of
the real COCO fixture's annotations (../shared/data/coco/test_coco.json: keypoints, box, polygons, area) on an
image entry of its source image's size, shifted by up to a pixel; every image is a symlink to its fixture JPEG.

Each figure is measured in a fresh child process (peak RSS = the child's VmHWM less its RSS after imports):
  load_ours        datasets.annotations.load_record_table (the validator included): the RecordTable fit() holds
  load_pycocotools pycocotools' COCO() of the same file in the same run: the reference (target: ours <= 1.5x in
                   time and in peak memory)
  first_batch      load + TopDownDataset (the HRNet COCO recipe, LJA on) + DataLoader with --workers forked
                   workers -> the first batch of 32; then --epochs epochs of --batches batches, each worker's
                   private memory (USS, /proc/PID/smaps_rollup) at the end of each
  eval             one core (torch and BLAS at one thread): the val split with the detector boxes loaded
                   (load_eval_split), then for all 104,125 boxes what predict() does after the model — flip-test
                   mapping (unflip_heatmaps + mean), DARK decode, crop -> image mapping — on a fixed batch of
                   heatmaps, and the scoring (rescoring, OKS-NMS, COCOeval on all / occluded / visible joints).
                   Target: <= 60 s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
FIXTURE = Path(os.environ.get("OCCPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "coco"
SIZES = {"train_images": 56599, "train_persons": 149813, "val_images": 5000, "val_person_images": 2346,
         "val_persons": 6352, "detections": 104125}


def generate(out: Path, sizes: dict = SIZES) -> dict:
    """The three files and the image folders under `out` (see the module docstring); their paths."""
    import numpy as np

    rng = np.random.default_rng(0)
    source = json.loads((FIXTURE / "test_coco.json").read_text())
    images = {i["id"]: i for i in source["images"]}
    persons = [a for a in source["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]

    def split(name: str, n_images: int, n_person_images: int, n_persons: int) -> tuple[Path, dict]:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        entries, anns = [], []
        per_image = np.bincount(rng.integers(0, n_person_images, n_persons - n_person_images),
                                minlength=n_person_images) + 1  # every person image holds at least one
        for i in range(n_images):
            template = persons[rng.integers(len(persons))]
            src = images[template["image_id"]]
            image_id = i + 1
            file_name = f"{image_id:012d}.jpg"
            link = folder / file_name
            if not link.exists():
                link.symlink_to(FIXTURE / src["file_name"])
            entries.append({**src, "id": image_id, "file_name": file_name})
            same_image = [p for p in persons if p["image_id"] == template["image_id"]]
            for _ in range(per_image[i] if i < n_person_images else 0):
                p = same_image[rng.integers(len(same_image))]
                dx, dy = rng.uniform(-1, 1, 2)
                kpts = np.asarray(p["keypoints"], float).reshape(-1, 3)
                kpts[kpts[:, 2] > 0, :2] += (dx, dy)
                anns.append({**p, "id": len(anns) + 1, "image_id": image_id,
                             "keypoints": [round(float(v), 2) if j % 3 < 2 else int(v)
                                           for j, v in enumerate(kpts.reshape(-1))],
                             "bbox": [round(p["bbox"][0] + dx, 2), round(p["bbox"][1] + dy, 2), *p["bbox"][2:]]})
        path = out / "annotations" / f"person_keypoints_{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"info": source.get("info", {}), "licenses": source.get("licenses", []), "images": entries,
                "annotations": anns, "categories": source["categories"]}
        path.write_text(json.dumps(data))
        return path, data

    train, _ = split("train2017", sizes["train_images"], sizes["train_images"], sizes["train_persons"])
    val, val_data = split("val2017", sizes["val_images"], sizes["val_person_images"], sizes["val_persons"])
    sizes_of = {i["id"]: (i["width"], i["height"]) for i in val_data["images"]}
    dets = []
    ids = rng.integers(1, sizes["val_images"] + 1, sizes["detections"])
    for image_id in ids.tolist():
        w, h = sizes_of[image_id]
        x, y = rng.uniform(0, w * 0.8), rng.uniform(0, h * 0.8)
        bw, bh = rng.uniform(10, w - x), rng.uniform(10, h - y)
        dets.append({"image_id": image_id, "category_id": 1, "bbox": [round(v, 2) for v in (x, y, bw, bh)],
                     "score": round(float(rng.uniform(0.01, 1.0)), 4)})
    det = out / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json"
    det.parent.mkdir(parents=True, exist_ok=True)
    det.write_text(json.dumps(dets))
    return {"train": str(train), "val": str(val), "det": str(det), "train_images": str(out / "train2017"),
            "val_images": str(out / "val2017"), "train_mb": train.stat().st_size / 1e6,
            "val_mb": val.stat().st_size / 1e6, "det_mb": det.stat().st_size / 1e6}


def _status(pid="self") -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024  # MiB
    return fields


def _uss_mib(pid: int) -> float:
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    kb = sum(int(line.split()[1]) for line in rollup if line.startswith(("Private_Clean", "Private_Dirty")))
    return kb / 1024


def child_load_ours(files: dict) -> dict:
    from datasets.annotations import load_record_table
    from datasets.skeletons import COCO17

    before = _status()["VmRSS"]
    start, cpu = time.perf_counter(), time.process_time()
    table = load_record_table(files["train"], files["train_images"], COCO17)  # what fit() loads
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": seconds, "cpu_s": cpu, "peak_mib": _status()["VmHWM"] - before, "held_mib": _status()["VmRSS"] - before,
            "persons": len(table), "table_mib": table.nbytes / 2**20}


def child_load_pycocotools(files: dict) -> dict:
    from pycocotools.coco import COCO

    import datasets.annotations  # noqa: F401  the same imports as ours, so "after imports" means the same

    before = _status()["VmRSS"]
    start, cpu = time.perf_counter(), time.process_time()
    gt = COCO(files["train"])
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": seconds, "cpu_s": cpu, "peak_mib": _status()["VmHWM"] - before, "held_mib": _status()["VmRSS"] - before,
            "annotations": len(gt.anns)}


def child_first_batch(files: dict, workers: int, epochs: int, batches: int) -> dict:
    import torch

    from datasets.annotations import load_record_table
    from datasets.occlusion import LJAConfig, OcclusionConfig, build_occlusions
    from datasets.skeletons import COCO17
    from datasets.topdown.augment import Augment
    from datasets.topdown.codec import HeatmapCodec
    from datasets.topdown.dataset import TopDownDataset, collate_skip_none

    start = time.perf_counter()
    records = load_record_table(files["train"], files["train_images"], COCO17)
    dataset = TopDownDataset(records, COCO17, HeatmapCodec((256, 192)), train=True,
                             augment=Augment(0.35, 45.0, 0.6, flip_p=0.5, half_body_p=0.3),
                             occlusions=build_occlusions(LJAConfig(), OcclusionConfig(), COCO17))
    del records
    loaded = time.perf_counter() - start
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=32 * batches, generator=torch.Generator()
                                             .manual_seed(0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, sampler=sampler, num_workers=workers,
                                         collate_fn=collate_skip_none, persistent_workers=workers > 0)
    uss, first = [], None
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for batch in loader:
            if first is None:
                first = time.perf_counter() - start
        pids = [w.pid for w in getattr(loader._iterator, "_workers", [])]
        uss.append([round(_uss_mib(pid), 1) for pid in pids])
    return {"load_s": loaded, "first_batch_s": first, "worker_uss_mib_by_epoch": uss, "persons": len(dataset),
            "batch": list(batch["image"].shape)}


def child_eval(files: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from datasets.evaluation.scoring import Predictions, coco_results, oks_nms
    from datasets.evaluation.splits import load_eval_split
    from datasets.skeletons import COCO17
    from datasets.topdown.codec import HeatmapCodec
    from datasets.topdown.dataset import TopDownDataset
    from datasets.topdown.geometry import transform_points

    clock = time.process_time  # one thread: CPU time is one core's time, whatever else the machine runs
    wall = time.perf_counter()
    times = {}
    t = clock()
    split = load_eval_split("coco", files["val"], files["val_images"], COCO17, det_file=files["det"])
    times["load_split_s"] = clock() - t
    codec = HeatmapCodec((256, 192))
    dataset = TopDownDataset(split.records, COCO17, codec, train=False)
    n, batch = len(dataset), 64
    h, w = codec.heatmap_hw
    rng = np.random.default_rng(0)
    peaks = rng.uniform((0, 0), (w - 1, h - 1), (batch, 17, 2))
    heatmaps, _ = codec.encode_torch(torch.as_tensor(peaks * codec.stride, dtype=torch.float32),
                                     torch.ones(batch, 17))
    heatmaps = heatmaps + 0.01 * torch.rand(heatmaps.shape, generator=torch.Generator().manual_seed(0))
    flipped = heatmaps.flip(-1)
    pred = Predictions(np.zeros((n, 17, 2)), np.zeros((n, 17)), np.zeros(n, bool),
                       np.array([dataset.crop_area(i) for i in range(n)]))
    flip_s = decode_s = map_s = 0.0
    for lo in range(0, n, batch):
        m = min(batch, n - lo)
        t0 = clock()
        averaged = codec.flip_average(heatmaps[:m], flipped[:m], COCO17.flip_index)
        t1 = clock()
        xy, score = codec.decode(averaged)
        t2 = clock()
        for i in range(m):
            pred.coords[lo + i] = transform_points(xy[i].numpy().astype(np.float64), dataset.inverse_matrix(lo + i))
            pred.scores[lo + i] = score[i].numpy()
        pred.done[lo:lo + m] = True
        t3 = clock()
        flip_s, decode_s, map_s = flip_s + t1 - t0, decode_s + t2 - t1, map_s + t3 - t2
    times |= {"flip_mapping_s": flip_s, "decode_s": decode_s, "crop_to_image_s": map_s}
    t = clock()
    results = coco_results(split.records, pred)
    times["rescore_s"] = clock() - t
    t = clock()
    kept = oks_nms(results, COCO17.sigmas_array())
    times["oks_nms_s"] = clock() - t
    t = clock()
    metrics = split.scorer.score(split.records, pred)  # rescoring + OKS-NMS again, then COCOeval x (all, O, NO)
    times["score_s"] = clock() - t
    times["cocoeval_s"] = times["score_s"] - times["rescore_s"] - times["oks_nms_s"]
    times["after_model_s"] = flip_s + decode_s + map_s + times["score_s"]
    times["total_s"] = times["after_model_s"] + times["load_split_s"]
    times["wall_s"] = time.perf_counter() - wall
    return {"boxes": n, "after_nms": len(kept), "metrics": {k: round(v, 4) for k, v in metrics.items() if k in ("AP", "O/AP", "NO/AP")},
            **times}


def run_child(kind: str, files: dict, *extra: str, one_core: bool = False, cache_mb: float | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if cache_mb is not None:
        env["OCCPOSE_IMAGE_CACHE_MB"] = str(cache_mb)  # each worker's decoded-region cache (dataset.py)
    if one_core:
        env |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--child", kind, "--files", json.dumps(files), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object (the default prints it indented)")
    p.add_argument("--keep", type=Path, help="generate into (or reuse) this directory instead of a temporary one")
    p.add_argument("--scale", type=float, default=1.0, help="shrink every count by this factor (a quick check)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batches", type=int, default=8, help="batches of 32 per epoch for the worker-memory figure")
    p.add_argument("--cache-mb", type=float, help="each loader worker's region cache (default: the dataset's)")
    p.add_argument("--only", choices=("load", "first-batch", "eval"), help="measure this part alone")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--files", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        files = json.loads(args.files)
        result = {"load-ours": lambda: child_load_ours(files), "load-pycocotools": lambda: child_load_pycocotools(files),
                  "first-batch": lambda: child_first_batch(files, args.workers, args.epochs, args.batches),
                  "eval": lambda: child_eval(files)}[args.child]()
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        t = time.perf_counter()
        cached = out / "files.json"
        sizes = {k: max(1, round(v * args.scale)) for k, v in SIZES.items()}
        files = json.loads(cached.read_text()) if cached.is_file() else generate(out, sizes)
        cached.write_text(json.dumps(files))
        report = {"sizes": sizes, "generate_s": time.perf_counter() - t, "files_mb": {k: round(files[f"{k}_mb"], 1)
                                                                      for k in ("train", "val", "det")}}
        targets = {}
        if args.only in (None, "load"):
            ours, ref = run_child("load-ours", files), run_child("load-pycocotools", files)
            report |= {"load_ours": ours, "load_pycocotools": ref, "load_time_ratio": ours["cpu_s"] / ref["cpu_s"],
                       "load_wall_ratio": ours["seconds"] / ref["seconds"],
                       "load_peak_memory_ratio": ours["peak_mib"] / ref["peak_mib"]}
            targets |= {"load_time": report["load_time_ratio"] <= 1.5,
                        "load_memory": report["load_peak_memory_ratio"] <= 1.5}
        if args.only in (None, "first-batch"):
            report["first_batch"] = run_child("first-batch", files, "--workers", str(args.workers), "--epochs",
                                              str(args.epochs), "--batches", str(args.batches), cache_mb=args.cache_mb)
        if args.only in (None, "eval"):
            report["eval_one_core"] = run_child("eval", files, one_core=True)
            targets["eval_60s"] = report["eval_one_core"]["after_model_s"] <= 60.0
        report["targets_met"] = targets
    print(json.dumps(report, indent=None if args.json else 2, default=float))


if __name__ == "__main__":
    main()
