#!/usr/bin/env python
"""Training data pipeline throughput (JPEG decode -> affine crop -> LJA -> Gaussian heatmaps), ours against a
straightforward reference written here, in samples/s on one core (one process, torch and OpenCV on one thread).

    python tests/benchmarks/pipeline.py --json

Prints {"ours": samples/s, "reference": samples/s, "ratio": ours / reference, ...}. The reference is the original
SimpleBaseline/HRNet recipe: cv2.imread of the whole image, flip of the whole image, cv2.warpAffine of the
full-size image, per-joint affine and per-joint Gaussian loops (`generate_target`), torchvision ToTensor +
Normalize, and LJA as a per-joint loop. Ours is TopDownDataset.__getitem__ with the same augmentation (HRNet's
scale/rotation/flip, LJA 0.15/0.20/p=1), whose decoded-region cache serves every epoch after an image's first decode.

Variants, timed in interleaved rounds (each round runs every variant over all samples, in a rotating order, so a
slow moment of the shared machine hits them alike; medians over rounds, the first round only warms up):
  ours              the default dataset in steady state (a later epoch: the cache holds every image)
  ours_cold         a fresh dataset each round, so its first epoch: one decode per image, its other persons
                    served from the cache
  ours_no_cache     cache_mb=0: every sample decodes (a dataset far larger than the cache)
  ours_no_cache_no_reduce   also max_reduction=1: no reduced JPEG decoding (matters only for large images)
  ours_fast_off     fast=False: whole-image decode and warp per sample (this pipeline before the cache)
  reference         the straightforward pipeline above
`stages_ms` times the stages alone on the same images, for what each optimisation contributes.

Data: the COCO val2017 fixture (../shared/data, or $OCCPOSE_SHARED_DATA) when present, else (or with --synthetic)
COCO-like 640x480 JPEGs written to a temporary directory (multi-octave noise, quality 90) with random persons;
`data` in the JSON says which. `--dataset mpii` uses the MPII fixture (1280x720, large persons: reduced decoding).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402

from datasets.annotations import load_records  # noqa: E402
from datasets.occlusion import LJAConfig, OcclusionConfig, build_occlusions  # noqa: E402
from datasets.skeletons import COCO17, MPII16  # noqa: E402
from datasets.topdown.augment import Augment  # noqa: E402
from datasets.topdown.codec import HeatmapCodec, normalise  # noqa: E402
from datasets.topdown.dataset import TopDownDataset  # noqa: E402
from datasets.topdown.geometry import affine_matrix, transform_points  # noqa: E402

AUGMENT = Augment(scale_factor=0.25, rotation=30.0, rotation_p=0.6, flip_p=0.5)  # the setting BENCHMARKS.md measured
LJA_PARAMS = LJAConfig(0.15, 0.20, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# The reference: SimpleBaseline's JointsDataset.__getitem__ (plus LJA), written the straightforward way


def get_affine_transform(center, size, rot, output_size):
    """SimpleBaseline's get_affine_transform, with the source size in pixels (w, h) instead of 200-px units."""
    src_w = size[0]
    dst_w, dst_h = output_size
    rot_rad = np.pi * rot / 180
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    src_dir = np.array([0 * cs - (src_w * -0.5) * sn, 0 * sn + (src_w * -0.5) * cs])
    dst_dir = np.array([0, dst_w * -0.5])
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center
    src[1, :] = center + src_dir
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2:, :] = get_3rd_point(src[0, :], src[1, :])
    dst[2:, :] = get_3rd_point(dst[0, :], dst[1, :])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def get_3rd_point(a, b):
    direct = a - b
    return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def affine_transform(pt, t):
    new_pt = np.array([pt[0], pt[1], 1.0]).T
    new_pt = np.dot(t, new_pt)
    return new_pt[:2]


class ReferencePipeline:
    def __init__(self, records, skeleton, codec: HeatmapCodec, seed: int = 0):
        self.records, self.skeleton, self.codec, self.seed = list(records), skeleton, codec, seed
        self.image_size = np.array([codec.input_hw[1], codec.input_hw[0]])  # w, h
        self.heatmap_size = np.array([codec.heatmap_hw[1], codec.heatmap_hw[0]])
        self.sigma = codec.sigma
        self.transform = T.Compose([T.ToTensor(), T.Normalize(mean=[0.485, 0.456, 0.406],
                                                              std=[0.229, 0.224, 0.225])])
        self.epoch = 0

    def __len__(self):
        return len(self.records)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __getitem__(self, idx):
        rec = self.records[idx]
        rng = np.random.default_rng([self.seed + 1, self.epoch, idx])
        data_numpy = cv2.imread(str(rec.file), cv2.IMREAD_COLOR)
        if data_numpy is None:
            raise ValueError(f"Fail to read {rec.file}")
        data_numpy = cv2.cvtColor(data_numpy, cv2.COLOR_BGR2RGB)
        joints = rec.keypoints[:, :2].astype(np.float64).copy()
        joints_vis = rec.keypoints[:, 2].copy()
        x, y, w, h = rec.bbox
        c = np.array([x + w * 0.5, y + h * 0.5])
        aspect = self.image_size[0] / self.image_size[1]
        if w > aspect * h:
            h = w / aspect
        else:
            w = h * aspect
        s = np.array([w, h]) * 1.25
        sf, rf = AUGMENT.scale_factor, AUGMENT.rotation
        s = s * np.clip(rng.normal() * sf + 1, 1 - sf, 1 + sf)
        r = np.clip(rng.normal() * rf, -rf * 2, rf * 2) if rng.random() <= AUGMENT.rotation_p else 0
        if rng.random() <= AUGMENT.flip_p:
            data_numpy = data_numpy[:, ::-1, :]
            joints[:, 0] = data_numpy.shape[1] - joints[:, 0] - 1
            for a, b in self.skeleton.flip_pairs:
                joints[[a, b]] = joints[[b, a]]
                joints_vis[[a, b]] = joints_vis[[b, a]]
            c[0] = data_numpy.shape[1] - c[0] - 1
            x = data_numpy.shape[1] - (x + rec.bbox[2]) - 1
        trans = get_affine_transform(c, s, r, self.image_size)
        crop = cv2.warpAffine(data_numpy, trans, (int(self.image_size[0]), int(self.image_size[1])),
                              flags=cv2.INTER_LINEAR)
        for i in range(len(joints)):
            if joints_vis[i] > 0.0:
                joints[i, 0:2] = affine_transform(joints[i, 0:2], trans)
        corners = [affine_transform(p, trans) for p in
                   ((x, y), (x + rec.bbox[2], y), (x, y + rec.bbox[3]), (x + rec.bbox[2], y + rec.bbox[3]))]
        crop = self.lja(crop, joints, joints_vis, np.min(corners, axis=0), np.max(corners, axis=0), rng)
        image = self.transform(crop)
        target, target_weight = self.generate_target(joints, joints_vis)
        return {"image": image, "heatmaps": torch.from_numpy(target), "target_weight": torch.from_numpy(target_weight),
                "index": idx}

    def lja(self, crop, joints, joints_vis, box_low, box_high, rng):
        """LJA as a loop: block ceil(0.15 n) of the n visible limb joints with 0.2 x body-box blocks."""
        h, w = crop.shape[:2]
        candidates = [j for j in self.skeleton.limb_joints
                      if joints_vis[j] == 2 and 0 <= joints[j, 0] < w and 0 <= joints[j, 1] < h]
        n = math.ceil(LJA_PARAMS.quantity_ratio * len(candidates))
        if n == 0:
            return crop
        crop = crop.copy()
        bw, bh = (box_high - box_low) * LJA_PARAMS.size_ratio
        for j in rng.choice(candidates, size=n, replace=False):
            x0, x1 = int(max(0, round(joints[j, 0] - bw / 2))), int(min(w, round(joints[j, 0] + bw / 2)))
            y0, y1 = int(max(0, round(joints[j, 1] - bh / 2))), int(min(h, round(joints[j, 1] + bh / 2)))
            crop[y0:y1, x0:x1] = rng.integers(0, 256)
        return crop

    def generate_target(self, joints, joints_vis):
        """SimpleBaseline's generate_target (gaussian), verbatim up to names."""
        num_joints = len(joints)
        target_weight = np.ones((num_joints, 1), dtype=np.float32)
        target_weight[:, 0] = joints_vis > 0
        target = np.zeros((num_joints, self.heatmap_size[1], self.heatmap_size[0]), dtype=np.float32)
        tmp_size = self.sigma * 3
        for joint_id in range(num_joints):
            feat_stride = self.image_size / self.heatmap_size
            mu_x = int(joints[joint_id][0] / feat_stride[0] + 0.5)
            mu_y = int(joints[joint_id][1] / feat_stride[1] + 0.5)
            ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
            br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
            if ul[0] >= self.heatmap_size[0] or ul[1] >= self.heatmap_size[1] or br[0] < 0 or br[1] < 0:
                target_weight[joint_id] = 0
                continue
            size = 2 * tmp_size + 1
            x = np.arange(0, size, 1, np.float32)
            y = x[:, np.newaxis]
            x0 = y0 = size // 2
            g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * self.sigma**2))
            g_x = max(0, -ul[0]), min(br[0], self.heatmap_size[0]) - ul[0]
            g_y = max(0, -ul[1]), min(br[1], self.heatmap_size[1]) - ul[1]
            img_x = max(0, ul[0]), min(br[0], self.heatmap_size[0])
            img_y = max(0, ul[1]), min(br[1], self.heatmap_size[1])
            if target_weight[joint_id] > 0.5:
                target[joint_id][img_y[0]:img_y[1], img_x[0]:img_x[1]] = \
                    g[int(g_y[0]):int(g_y[1]), int(g_x[0]):int(g_x[1])]
        return target, target_weight


# ----------------------------------------------------------------------------------------------------------------
# Data


def synthetic_coco(root: Path, n_images: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """COCO-like data: 640x480 quality-90 JPEGs of multi-octave noise (smooth regions, edges, fine grain, ~100-150
    KB each like COCO's) with 2-4 persons each: boxes 80-400 px tall, 17 keypoints inside, visibility 0/1/2."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for k in range(n_images):
        h, w = 480, 640
        image = np.zeros((h, w, 3), np.float32)
        for octave, amplitude in ((8, 90), (32, 50), (128, 30), (640, 12)):
            small = rng.normal(0, 1, (max(2, h * octave // w), octave, 3)).astype(np.float32)
            image += amplitude * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + 128 + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        name = f"{k:012d}.jpg"
        cv2.imwrite(str(root / name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": k, "file_name": name, "width": w, "height": h})
        for _ in range(int(rng.integers(2, 5))):
            bh = float(rng.uniform(80, 400))
            bw = bh * float(rng.uniform(0.35, 0.8))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            kp = np.column_stack([rng.uniform(x, x + bw, 17), rng.uniform(y, y + bh, 17),
                                  rng.choice([0, 1, 2], 17, p=[0.15, 0.15, 0.7])])
            kp[kp[:, 2] == 0, :2] = 0
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": 1, "iscrowd": 0,
                                "bbox": [x, y, bw, bh], "area": bw * bh, "num_keypoints": int((kp[:, 2] > 0).sum()),
                                "keypoints": [float(v) for v in kp.reshape(-1)]})
    ann = root / "person_keypoints.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "person"}]}))
    return ann, root


def load_data(args, tmp: Path):
    shared = Path(os.environ.get("OCCPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if args.dataset == "mpii":
        if not (shared / "mpii/test_mpii.json").is_file():
            raise SystemExit(f"--dataset mpii needs the MPII fixture under {shared}")
        return (load_records(shared / "mpii/test_mpii.json", shared / "mpii", MPII16), MPII16,
                HeatmapCodec((256, 256)), "mpii-fixture (5 persons, 1280x720 JPEGs)")
    if not args.synthetic and (shared / "coco/test_coco.json").is_file():
        records = load_records(shared / "coco/test_coco.json", shared / "coco", COCO17)
        return records, COCO17, HeatmapCodec((256, 192)), \
            f"coco-fixture ({len(records)} persons of 4 COCO val2017 images, ~640x425 JPEGs)"
    ann, images = synthetic_coco(tmp)
    records = load_records(ann, images, COCO17)
    return records, COCO17, HeatmapCodec((256, 192)), \
        f"synthetic ({len(records)} persons on 8 COCO-like 640x480 quality-90 JPEGs)"


# ----------------------------------------------------------------------------------------------------------------
# Timing


def epoch_time(pipeline, epoch: int) -> float:
    pipeline.set_epoch(epoch)
    start = time.perf_counter()
    for i in range(len(pipeline)):
        pipeline[i]
    return (time.perf_counter() - start) / len(pipeline)


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def stage_times(records, codec: HeatmapCodec, skeleton, repeats: int) -> dict:
    """Each stage alone on the dataset's images (one unaugmented crop each), medians over `repeats`."""
    ref = ReferencePipeline(records, skeleton, codec)
    ours = TopDownDataset(records, skeleton, codec, train=False)
    hw = codec.input_hw
    files = sorted({str(r.file) for r in records})
    bgr = [cv2.imread(f) for f in files]
    rgb = [cv2.cvtColor(b, cv2.COLOR_BGR2RGB) for b in bgr]
    rgba = [cv2.cvtColor(b, cv2.COLOR_BGR2RGBA) for b in bgr]
    forward = [(files.index(str(r.file)), affine_matrix(ours.crop_geometry(i, None), hw))
               for i, r in enumerate(records)]
    crops = [cv2.warpAffine(rgb[k], m, (hw[1], hw[0])) for k, m in forward]
    labels = [(transform_points(r.keypoints[:, :2], m), r.keypoints[:, 2]) for r, (_, m) in zip(records, forward)]
    n_img, n = len(files), len(records)

    def each(fn, items):
        return lambda: [fn(*item) if isinstance(item, tuple) else fn(item) for item in items]

    stages = {
        "decode_full": median_ms(lambda: [cv2.imread(f) for f in files], repeats) / n_img,
        "warp_rgb_full_image": median_ms(each(lambda k, m: cv2.warpAffine(rgb[k], m, (hw[1], hw[0]),
                                                                           flags=cv2.INTER_LINEAR), forward),
                                         repeats) / n,
        "warp_rgba_then_rgb": median_ms(each(lambda k, m: cv2.cvtColor(cv2.warpAffine(
            rgba[k], m, (hw[1], hw[0]), flags=cv2.INTER_LINEAR), cv2.COLOR_RGBA2RGB), forward), repeats) / n,
        "normalise_torchvision": median_ms(each(ref.transform, crops), repeats) / n,
        "normalise_numpy_before": median_ms(each(lambda c: torch.from_numpy(
            ((c.astype(np.float32) - np.float32([123.675, 116.28, 103.53])) / np.float32([58.395, 57.12, 57.375]))
            .transpose(2, 0, 1)), crops), repeats) / n,
        "normalise_ours": median_ms(each(normalise, crops), repeats) / n,
        "heatmaps_generate_target": median_ms(each(ref.generate_target, labels), repeats) / n,
        "heatmaps_codec_encode_before": median_ms(each(lambda k, v: _encode_before(codec, k, v > 0), labels),
                                                  repeats) / n,
        "heatmaps_codec_encode": median_ms(each(lambda k, v: codec.encode(k, (v > 0).astype(np.float32)), labels),
                                           repeats) / n,
    }
    return {k: round(v, 4) for k, v in stages.items()}


def _encode_before(codec: HeatmapCodec, keypoints: np.ndarray, weights: np.ndarray):
    """codec.encode as it was: the (K, h, w) product in float64, then cast and masked."""
    h, w = codec.heatmap_hw
    centers = keypoints / codec.stride
    inside = (centers[:, 0] >= 0) & (centers[:, 0] <= w - 1) & (centers[:, 1] >= 0) & (centers[:, 1] <= h - 1)
    target_weight = weights & inside
    gx = np.exp(-((np.arange(w, dtype=np.float32)[None, :] - centers[:, :1]) ** 2) / (2 * codec.sigma**2))
    gy = np.exp(-((np.arange(h, dtype=np.float32)[None, :] - centers[:, 1:2]) ** 2) / (2 * codec.sigma**2))
    heatmaps = (gy[:, :, None] * gx[:, None, :]).astype(np.float32)
    heatmaps *= target_weight[:, None, None]
    return heatmaps, target_weight.astype(np.float32)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--dataset", choices=("coco", "mpii"), default="coco")
    p.add_argument("--synthetic", action="store_true", help="COCO-like synthetic JPEGs even if the fixture exists")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="occpose-pipeline-") as tmp:
        records, skeleton, codec, data = load_data(args, Path(tmp))

        def dataset(**kwargs):
            return TopDownDataset(records, skeleton, codec, train=True, augment=AUGMENT,
                                  occlusions=build_occlusions(LJA_PARAMS, OcclusionConfig(), skeleton), **kwargs)

        warm = dataset()
        no_cache, no_reduce, fast_off = dataset(cache_mb=0), dataset(cache_mb=0, max_reduction=1), dataset(fast=False)
        reference = ReferencePipeline(records, skeleton, codec)
        factories = {"ours": lambda: warm, "ours_cold": dataset, "ours_no_cache": lambda: no_cache,
                     "ours_no_cache_no_reduce": lambda: no_reduce, "ours_fast_off": lambda: fast_off,
                     "reference": lambda: reference}
        times = {name: [] for name in factories}
        names = list(factories)
        for round_ in range(args.rounds + 1):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                pipeline = factories[name]()  # ours_cold: a fresh dataset, built before the clock starts
                seconds = epoch_time(pipeline, round_)
                if round_:  # round 0 warms the OS file cache, the allocator and `ours`' region cache
                    times[name].append(seconds)
        stages = stage_times(records, codec, skeleton, repeats=max(5, args.rounds // 2))
        warm_cache = {"images": len(warm.cache), "mib": round(warm.cache.nbytes / 2**20, 2),
                      "hits": warm.cache.hits, "decodes": warm.cache.misses}
    per_s = {name: 1.0 / float(np.median(t)) for name, t in times.items()}
    ref = per_s["reference"]
    result = {
        "ours": round(per_s["ours"], 1), "reference": round(ref, 1), "ratio": round(per_s["ours"] / ref, 2),
        "ours_cold": round(per_s["ours_cold"], 1), "ratio_cold": round(per_s["ours_cold"] / ref, 2),
        "ours_no_cache": round(per_s["ours_no_cache"], 1), "ratio_no_cache": round(per_s["ours_no_cache"] / ref, 2),
        "ours_no_cache_no_reduce": round(per_s["ours_no_cache_no_reduce"], 1),
        "ratio_no_cache_no_reduce": round(per_s["ours_no_cache_no_reduce"] / ref, 2),
        "ours_fast_off": round(per_s["ours_fast_off"], 1), "ratio_fast_off": round(per_s["ours_fast_off"] / ref, 2),
        "ms_per_sample": {name: round(1e3 / v, 3) for name, v in per_s.items()},
        "unit": "samples/s on one core (one process, torch and OpenCV threads = 1), median of interleaved rounds",
        "data": data, "samples": len(records), "rounds": args.rounds,
        "input_hw": list(codec.input_hw), "augment": "scale 0.25, rotation 30 (p 0.6), flip 0.5, LJA 0.15/0.20 p=1",
        "cache_after_warm_epochs": warm_cache, "stages_ms": stages,
        "cpu": _cpu_name(), "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if not args.json:
        print(f"{'pipeline':24s} {'samples/s':>10s} {'ms/sample':>10s} {'x reference':>12s}", file=sys.stderr)
        for name in ("ours", "ours_cold", "ours_no_cache", "ours_no_cache_no_reduce", "ours_fast_off", "reference"):
            print(f"{name:24s} {per_s[name]:10.1f} {1e3 / per_s[name]:10.3f} {per_s[name] / ref:12.2f}",
                  file=sys.stderr)
        print("stages (ms each): " + ", ".join(f"{k} {v}" for k, v in stages.items()), file=sys.stderr)
        print(f"data: {data}", file=sys.stderr)
    print(json.dumps(result))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
