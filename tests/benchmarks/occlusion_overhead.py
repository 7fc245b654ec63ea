#!/usr/bin/env python
"""Per-sample cost of the training pipeline (JPEG decode -> affine crop -> occlusion -> heatmaps) without and with
each occlusion transform, on the real COCO fixture JPEGs (or any COCO json + image dir), single process.

    python tests/benchmarks/occlusion_overhead.py --json

Prints {"samples": n, "base_ms": ..., "transforms": {name: {"ms", "overhead", "alone_ms", "alone_overhead"}}}:
`ms` is the whole pipeline with the transform, `overhead` its excess over the plain pipeline (both medians over
rounds interleaved variant by variant, so a slow moment hits every variant alike); `alone_ms` times the transform
by itself on ready crops, and `alone_overhead` = alone_ms / base_ms, the steadier measure of what it adds. The LJA
target is an overhead under 10 %.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from datasets.annotations import load_records  # noqa: E402
from datasets.occlusion import LJAConfig, OcclusionConfig, RandomOccluders, build_occlusions  # noqa: E402
from datasets.occlusion.targeted import TARGETED, targeted_augmentation  # noqa: E402
from datasets.skeletons import COCO17  # noqa: E402
from datasets.topdown.augment import Augment  # noqa: E402
from datasets.topdown.codec import HeatmapCodec  # noqa: E402
from datasets.topdown.dataset import TopDownDataset  # noqa: E402

AUGMENT = Augment(scale_factor=0.25, rotation=30.0, rotation_p=0.6, flip_p=0.5)  # scale 0.25, rotation 30 (p 0.6), flip


def variants(records, codec):
    def make(**kwargs):
        return TopDownDataset(records, COCO17, codec, train=True, augment=AUGMENT, **kwargs)

    yield "none", make()
    yield "lja", make(occlusions=build_occlusions(LJAConfig(0.15, 0.20, 1.0), OcclusionConfig(), COCO17))
    yield "occluders", make(occlusions=(RandomOccluders(p=1.0),))
    for name in TARGETED:
        yield name, make(occlusions=(targeted_augmentation(name, COCO17, p=1.0),))


def main(argv=None) -> None:
    shared = Path(os.environ.get("OCCPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ann", type=Path, default=shared / "coco/test_coco.json")
    p.add_argument("--images", type=Path, default=shared / "coco")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    records = load_records(args.ann, args.images, COCO17)
    datasets = dict(variants(records, HeatmapCodec((256, 192))))
    times = {name: [] for name in datasets}
    for round_ in range(args.rounds + 1):
        for name, ds in datasets.items():
            ds.set_epoch(round_)
            start = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            if round_:  # round 0 warms caches
                times[name].append((time.perf_counter() - start) / len(ds))
    per_sample = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    base = per_sample.pop("none")
    plain = datasets["none"]
    crops = [plain.crop(i) for i in range(len(plain))]
    alone = {}
    for name, ds in datasets.items():
        if name == "none":
            continue
        transform = ds.occlusions[0]
        rounds = []
        for round_ in range(args.rounds):
            rng = np.random.default_rng(round_)
            start = time.perf_counter()
            for crop in crops:
                transform(crop, rng)
            rounds.append((time.perf_counter() - start) / len(crops))
        alone[name] = float(np.median(rounds)) * 1e3
    result = {"samples": len(records), "rounds": args.rounds, "base_ms": round(base, 3),
              "transforms": {name: {"ms": round(ms, 3), "overhead": round(ms / base - 1, 4),
                                    "alone_ms": round(alone[name], 4), "alone_overhead": round(alone[name] / base, 4)}
                             for name, ms in per_sample.items()}}
    if not args.json:
        for name, r in result["transforms"].items():
            print(f"{name:16s} {r['ms']:7.3f} ms/sample  {100 * r['overhead']:+6.1f} %   alone {r['alone_ms']:.3f} ms "
                  f"= {100 * r['alone_overhead']:.1f} %", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
