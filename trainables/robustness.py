"""A trained model under test-time occlusion attacks (datasets/occlusion/attacks.py): its metric against the attack size, the
drop when one joint at a time is attacked, and part attacks; written as JSON, a markdown table and PNG curves.

`attack(checkpoint, ...)` is the whole sweep of one checkpoint directory; `sweep(model, cfg, ...)` the evaluations
alone. search/robustness.py (the command line) and dashboards/report.py call them; logging to MLflow is theirs.
Keypoint attacks run at every radius (radius 0 = clean); per-keypoint drops attack one joint at a time at the
largest radius; part attacks cover each body part in turn.
"""
from __future__ import annotations

from pathlib import Path

from datasets import atomic
from datasets.occlusion.attacks import ATTACKS

DEFAULT_ATTACKS = ("keypoint-blackout", "part-blackout")
DEFAULT_RADII = (0.0, 6.0, 12.0, 18.0)  # input-crop pixels


def check_attacks(names) -> None:
    """ValueError naming the first unknown attack and the choices."""
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}")


def load_trial(checkpoint: Path, dataset: str | None = None, data_root: str | None = None, split: str = "val"):
    """(model, TrialConfig, split) of a checkpoint directory (model.pt + trial_config.json). With `dataset` other
    than the trial's, the config points at that dataset's evaluation split under `data_root` (its official layout)
    and the split is "val". ValueError when `dataset` comes without `data_root`."""
    from datasets.layouts import resolve
    from trainables.checkpoint import load_checkpoint

    model, cfg = load_checkpoint(checkpoint)
    if dataset and dataset != cfg.data.dataset:
        if not data_root:
            raise ValueError(f"--dataset {dataset} needs --data-root")
        layout = resolve(dataset, data_root)
        chosen = layout.val_occ if split == "val_occ" and layout.val_occ else layout.val
        cfg = cfg.replace(**{"data.dataset": dataset, "data.val_ann": str(chosen.ann),
                             "data.val_images": str(chosen.images), "data.val_occ_ann": "",
                             "data.val_gt": str(layout.val_gt or ""), "data.det_file": ""})
        split = "val"
    return model, cfg, split


def sweep(model, cfg, attacks=DEFAULT_ATTACKS, radii=DEFAULT_RADII, split: str = "val", per_keypoint: bool = True,
          max_samples: int = 0) -> dict:
    """Evaluate `model` on the trial's `split` ("val" or "val_occ") clean and under each attack.

    Returns {"metric": the dataset's main metric key (AP, or PCKh_0.5 for MPII), "split", "persons", "clean": value,
    "keypoint": {attack: {radius: value}}, "per_keypoint": {attack: {joint: clean - attacked}},
    "part": {attack: {part: value}}}. ValueError when the trial has no such split.
    """
    import torch

    from datasets.occlusion.attacks import make_attack
    from trainables.build import build_codec
    from datasets.meta import get as dataset_meta
    from datasets.topdown.dataset import TopDownDataset
    from trainables.engine import evaluate
    from datasets.evaluation.splits import load_eval_split

    data = cfg.data
    meta = dataset_meta(data.dataset)
    skeleton = meta.skeleton
    ann, images = (data.val_occ_ann, data.val_occ_images or data.val_images) if split == "val_occ" \
        else (data.val_ann, data.val_images)
    if not ann:
        raise ValueError(f"the trial has no {split} split")
    loaded = load_eval_split(meta.protocol, ann, images, skeleton, max_samples,
                             gt_mat=data.val_gt if split == "val" else "", visibility_splits=False)
    codec = build_codec(cfg)
    key = meta.main_key
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)

    def score(attack=None) -> float:
        dataset = TopDownDataset(loaded.records, skeleton, codec, train=False, attack=attack)
        return evaluate(model, dataset, loaded.scorer, codec, device, data.flip_test)[key]

    clean = score()
    result = {"metric": key, "split": split, "persons": len(loaded.records), "clean": clean,
              "keypoint": {}, "per_keypoint": {}, "part": {}}
    for name in attacks:
        if name.startswith("keypoint"):
            result["keypoint"][name] = {r: clean if r == 0 else score(make_attack(name, skeleton, radius=r))
                                        for r in radii}
            radius = max(radii)
            if per_keypoint and radius > 0:
                result["per_keypoint"][name] = {
                    joint: clean - score(make_attack(name, skeleton, radius=radius, joints=(j,)))
                    for j, joint in enumerate(skeleton.keypoints)}
        else:
            result["part"][name] = {part: score(make_attack(name, skeleton, part=part)) for part, _ in skeleton.parts}
    return result


def write_report(result: dict, out: Path) -> list[Path]:
    """robustness.json, robustness.md and the PNG curves of a `sweep` result in `out`; the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    metric = result["metric"]
    files = [out / "robustness.json", out / "robustness.md"]
    atomic.write_json(files[0], result, indent=1)
    lines = [f"clean {metric}: {result['clean']:.4f} ({result['persons']} persons, split {result['split']})", ""]
    for name, curve in result["keypoint"].items():
        lines += [f"| {name} radius | " + " | ".join(f"{r:g}" for r in curve) + " |",
                  "|---|" + "---|" * len(curve), f"| {metric} | " + " | ".join(f"{v:.4f}" for v in curve.values())
                  + " |", ""]
    for name, parts in result["part"].items():
        lines += [f"| {name} part | {metric} |", "|---|---|"] + [f"| {p} | {v:.4f} |" for p, v in parts.items()] + [""]
    for name, drops in result["per_keypoint"].items():
        lines += [f"| {name} joint | {metric} drop |", "|---|---|"] + [f"| {j} | {v:.4f} |" for j, v in drops.items()]
        lines += [""]
    atomic.write_text(files[1], "\n".join(lines))
    if result["keypoint"]:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, curve in result["keypoint"].items():
            ax.plot(list(curve), list(curve.values()), marker="o", label=name)
        ax.set(xlabel="attack radius (input px)", ylabel=metric, title=f"{metric} vs keypoint attack size")
        ax.legend(), ax.grid(alpha=0.3)
        files.append(out / "keypoint_attacks.png")
        _save(fig, files[-1])
    for kind, title in (("per_keypoint", "per-keypoint drop"), ("part", "part attacks")):
        for name, values in result[kind].items():
            fig, ax = plt.subplots(figsize=(7, 3.5))
            ax.bar(range(len(values)), list(values.values()))
            ax.set_xticks(range(len(values)), list(values), rotation=60, ha="right", fontsize=7)
            ax.set(ylabel=f"{metric} drop" if kind == "per_keypoint" else metric, title=f"{name}: {title}")
            files.append(out / f"{name}_{kind}.png")
            _save(fig, files[-1])
    return files


def _save(fig, path: Path) -> None:
    """A figure as PNG at `path`, written atomically."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic.atomic_writer(path, "wb") as f:
        fig.savefig(f, dpi=120, format="png")
    plt.close(fig)


def attack(checkpoint: Path, attacks=DEFAULT_ATTACKS, radii=DEFAULT_RADII, *, out: Path, split: str = "val",
           per_keypoint: bool = True, max_samples: int = 0, dataset: str | None = None,
           data_root: str | None = None) -> tuple[dict, list[Path]]:
    """The whole sweep of one checkpoint directory: load it (`load_trial`), attack it (`sweep`), write the report
    into `out` (`write_report`). Returns (the sweep's result, the files written). ValueError for an unknown attack,
    a missing split, a negative max_samples or a --dataset without --data-root; CheckpointError (a ValueError)
    naming the file for a checkpoint that is missing, torn or of another architecture."""
    check_attacks(attacks)
    if max_samples < 0:
        raise ValueError(f"max_samples must be >= 0 (0 = all), got {max_samples}")
    model, cfg, split = load_trial(checkpoint, dataset, data_root, split)
    result = sweep(model, cfg, attacks, radii, split, per_keypoint, max_samples)
    return result, write_report(result, out)
