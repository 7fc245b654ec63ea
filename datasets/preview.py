#!/usr/bin/env python
"""Look at what an occlusion transform or attack does: a contact sheet of transformed crops plus the exact
occlusions drawn, as JSON.

    python datasets/preview.py --dataset coco --data-root DIR --ann FILE --aug lja --quantity-ratio 0.15 \\
        --size-ratio 0.2 --p 1 --n 12 --seed 0 --out OUT
    python datasets/preview.py --dataset coco --data-root DIR --attack part-blackout --part arms --out OUT

Writes OUT/preview.png and OUT/occlusions.json:
    {"samples": [{"image_id", "crop": [w, h], "body_box": [x0, y0, x1, y1], "visible_limb_joints": [...],
                  "occlusions": [{"joint", "part", "box": [x0, y0, x1, y1], "fill", "kind", "shape"}]}],
     "skipped": [{"image_id", "file", "reason"}]}   (persons whose image cannot be read: image_check.py)
Coordinates are crop pixels (boxes exclusive at x1, y1); `part` is set instead of `joint` for part transforms;
`fill` is the grey value painted, or null where the region was blurred, pasted or coloured.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from datasets import atomic, meta
from datasets.cli import existing_dir, non_negative_int, output_dir, positive_int
from datasets.annotations import load_records
from datasets.layouts import resolve
from datasets.occlusion import LJA, LJAConfig, RandomOccluders, visible_limb_joints
from datasets.occlusion.attacks import ATTACKS, make_attack
from datasets.occlusion.targeted import TARGETED, targeted_augmentation
from datasets.topdown.augment import Augment
from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.dataset import TopDownDataset

AUGMENTATIONS = ("lja", "occluders") + TARGETED


def pair(kind):
    def parse(text: str):
        try:
            low, high = (kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected two comma-separated values, got {text!r}") from None
        return low, high

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True,
                   choices=sorted(d for d in meta.DATASETS if d != "synthetic") + ["synthetic"])
    p.add_argument("--data-root", type=existing_dir,
                   help="image directory of --ann, or the dataset root in its official layout (then its val split); "
                        "not for synthetic, whose generated val_occ split is shown")
    p.add_argument("--ann", type=Path, help="annotation file (COCO json, or the MPII json)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--aug", choices=AUGMENTATIONS, help="training augmentation to show")
    which.add_argument("--attack", choices=ATTACKS, help="test-time attack to show")
    p.add_argument("--n", type=positive_int, default=12, help="number of persons")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--out", type=output_dir, required=True, help="output directory")
    p.add_argument("--p", type=float, default=1.0, help="probability of the augmentation")
    lja = p.add_argument_group("lja")
    lja.add_argument("--quantity-ratio", type=float, default=0.15)
    lja.add_argument("--size-ratio", type=float, default=0.20)
    occ = p.add_argument_group("occluders")
    occ.add_argument("--count", type=pair(int), default=(1, 3), help="min,max occluders")
    occ.add_argument("--area", type=pair(float), default=(0.02, 0.15), help="min,max fraction of the body box")
    occ.add_argument("--shapes", default="rect,ellipse,texture")
    tgt = p.add_argument_group("targeted augmentations")
    tgt.add_argument("--label-removal", action="store_true", help="zero the covered joints' target weight")
    tgt.add_argument("--radius-ratio", type=float, default=0.08, help="keypoint circle radius / body box side")
    tgt.add_argument("--max-keypoints", type=positive_int, default=5, help="multi-keypoint: at most this many")
    tgt.add_argument("--parts", default="", help="comma-separated parts to choose from (default all)")
    att = p.add_argument_group("attacks")
    att.add_argument("--radius", type=float, default=12.0, help="keypoint attacks: circle radius in crop pixels")
    att.add_argument("--part", default="", help="part attacks: the body part")
    return p


def make_transform(args, skeleton):
    if args.attack:
        return make_attack(args.attack, skeleton, radius=args.radius, part=args.part)
    if args.aug == "lja":
        return LJA(LJAConfig(args.quantity_ratio, args.size_ratio, args.p), tuple(skeleton.limb_joints))
    if args.aug == "occluders":
        return RandomOccluders(args.p, tuple(args.count), tuple(args.area), tuple(args.shapes.split(",")))
    parts = tuple(p for p in args.parts.split(",") if p)
    return targeted_augmentation(args.aug, skeleton, args.p, args.label_removal, args.radius_ratio,
                                 args.max_keypoints, parts)


def annotation_source(args) -> tuple[Path, Path]:
    if args.dataset == "synthetic":
        from datasets.synthetic import SyntheticSpec, ensure_dataset

        paths = ensure_dataset(SyntheticSpec(seed=args.seed))  # generated once, cached under OCCPOSE_CACHE
        return paths.annotations["val_occ"], paths.images["val"]
    if args.ann:
        return args.ann, args.data_root
    layout = resolve(args.dataset, args.data_root)
    split = layout.val_occ or layout.val
    return split.ann, split.images


def preview(args) -> dict:
    dataset_meta = meta.get(args.dataset)
    skeleton = dataset_meta.skeleton
    ann, images = annotation_source(args)
    records = load_records(ann, images, skeleton)
    rng = np.random.default_rng(args.seed)
    chosen = sorted(rng.choice(len(records), size=min(args.n, len(records)), replace=False).tolist())
    transform = make_transform(args, skeleton)
    still = Augment()  # the identity: untouched geometry, so only the occlusion shows
    dataset = TopDownDataset([records[i] for i in chosen], skeleton, HeatmapCodec(dataset_meta.input_hw),
                             train=args.attack is None, augment=still, seed=args.seed,
                             occlusions=() if args.attack else (transform,), attack=transform if args.attack else None)
    samples, tiles = [], []
    for i in range(len(dataset)):
        crop = dataset.crop(i)
        if crop is None:
            continue
        h, w = crop.image.shape[:2]
        samples.append({
            "image_id": dataset.records[i].image_id,
            "crop": [w, h],
            "body_box": [round(float(v), 2) for v in crop.body_box],
            "visible_limb_joints": visible_limb_joints(crop.keypoints, crop.visibility, skeleton.limb_joints,
                                                       (h, w)).tolist(),
            "occlusions": [{"joint": o.joint, "part": o.part, "box": list(o.box), "fill": o.fill, "kind": o.kind,
                            "shape": o.shape} for o in crop.occlusions],
        })
        tiles.append(draw(crop, skeleton))
    if not samples:
        raise ValueError(f"none of the {len(dataset)} chosen persons' images could be read under {images} (see the "
                         "lines above): check --data-root")
    ok, png = cv2.imencode(".png", contact_sheet(tiles))
    if not ok:
        raise ValueError("the contact sheet could not be encoded as PNG")
    # The persons whose image could not be read (image_check.py) are left out of the sheet, counted and named.
    result = {"samples": samples, "skipped": [{"image_id": dataset.records[i].image_id,
                                               "file": str(dataset.records[i].file), "reason": dataset.faults[i]}
                                              for i in sorted(dataset.skipped)]}
    atomic.write_bytes(args.out / "preview.png", png.tobytes())  # each file whole or not at all
    atomic.write_json(args.out / "occlusions.json", result, indent=1)
    return result


def draw(crop, skeleton) -> np.ndarray:
    """The crop (BGR for OpenCV) with its labelled joints: green visible, orange occluded, red where the target
    weight was removed."""
    image = cv2.cvtColor(crop.image, cv2.COLOR_RGB2BGR)
    for j, (x, y) in enumerate(crop.keypoints):
        if crop.visibility[j] == 0:
            continue
        colour = (0, 0, 255) if crop.target_weight[j] == 0 else (0, 200, 0) if crop.visibility[j] == 2 \
            else (0, 140, 255)
        cv2.circle(image, (int(round(x)), int(round(y))), 2, colour, -1, cv2.LINE_AA)
    return image


def contact_sheet(tiles: list[np.ndarray], columns: int = 6) -> np.ndarray:
    if not tiles:
        return np.zeros((8, 8, 3), np.uint8)
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (h + 4), min(len(tiles), columns) * (w + 4), 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * (h + 4):r * (h + 4) + h, c * (w + 4):c * (w + 4) + w] = tile
    return sheet


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dataset != "synthetic" and args.data_root is None:
        parser.error(f"--data-root is required for --dataset {args.dataset}")
    if args.dataset == "synthetic" and (args.data_root or args.ann):
        parser.error("--dataset synthetic is generated: it takes neither --data-root nor --ann")
    try:
        result = preview(args)
    except ValueError as err:  # unknown part, bad probabilities, a malformed annotation, a wrong layout
        print(f"preview.py: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # --out cannot be created or written (checked up front as far as it can be)
        print(f"preview.py: error: --out {args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"{len(result['samples'])} crops, {sum(len(s['occlusions']) for s in result['samples'])} occlusions -> "
          f"{args.out / 'preview.png'}, {args.out / 'occlusions.json'}")
    if result["skipped"]:
        files = sorted({Path(s["file"]).name for s in result["skipped"]})
        print(f"{len(result['skipped'])} persons skipped: their images cannot be read ({', '.join(files[:5])}"
              f"{', ...' if len(files) > 5 else ''}; reasons in occlusions.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
