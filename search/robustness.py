#!/usr/bin/env python
"""Evaluate a trained model under test-time occlusion attacks: AP against attack size, per-keypoint AP drops and
part attacks, as a table and PNG curves, logged to MLflow.

    python search/robustness.py --checkpoint ray_results/EXP.train/TRIAL/checkpoint_... \\
        --attacks keypoint-blackout,part-blackout --radii 0,6,12,18
    python search/robustness.py --run-id MLFLOW_RUN_ID --attacks keypoint-blur,keypoint-meanout

A checkpoint directory holds model.pt and trial_config.json (what every trial saves); --run-id takes the trial's
best checkpoint from its MLflow run and logs the results back to that run, --checkpoint logs to a new run in the
experiment --experiment. The data are the trial's own evaluation split unless --dataset/--data-root name another.
Keypoint attacks run at every radius (radius 0 = clean); per-keypoint drops attack one joint at a time at the
largest radius; part attacks cover each body part in turn.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from datasets.attacks import ATTACKS  # noqa: E402
from datasets.meta import DATASETS  # noqa: E402


def parse_list(kind):
    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint directory (model.pt + trial_config.json)")
    source.add_argument("--run-id", help="MLflow run of a trial: its best checkpoint, results logged back to it")
    p.add_argument("--dataset", choices=sorted(DATASETS), help="evaluate on this dataset instead of the trial's")
    p.add_argument("--data-root", help="the dataset's root (official layout), with --dataset")
    p.add_argument("--split", default="val", choices=["val", "val_occ"], help="which evaluation split")
    p.add_argument("--attacks", type=parse_list(str), default=["keypoint-blackout", "part-blackout"],
                   help=f"comma-separated, from: {', '.join(ATTACKS)}")
    p.add_argument("--radii", type=parse_list(float), default=[0, 6, 12, 18],
                   help="keypoint attack radii in input-crop pixels")
    p.add_argument("--no-per-keypoint", dest="per_keypoint", action="store_false",
                   help="skip the per-keypoint AP drops (one evaluation per joint and keypoint attack)")
    p.add_argument("--max-samples", type=int, default=0, help="evaluate on at most this many persons (0 = all)")
    p.add_argument("--out", type=Path, default=Path("robustness"), help="output directory")
    p.add_argument("--experiment", default="robustness", help="MLflow experiment for --checkpoint results")
    return p


def fetch_checkpoint(run_id: str, into: Path, client=None) -> Path:
    """The trial run's best checkpoint directory, downloaded into `into`; ValueError when the run has none (a
    trial that failed or was killed before the tracker stored it)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    client.get_run(run_id)  # a clear MLflow error for an unknown run
    try:
        return Path(client.download_artifacts(run_id, "best_checkpoint", str(into)))
    except (MlflowException, OSError) as err:
        raise ValueError(f"run {run_id} has no best_checkpoint artifact ({type(err).__name__})") from err


def load_trial(checkpoint: Path, args):
    """The trained model, its TrialConfig, and the split to attack."""
    from datasets.layouts import resolve
    from trainables.worker import load_checkpoint

    model, cfg = load_checkpoint(checkpoint)
    if args.dataset and args.dataset != cfg.data.dataset:
        if not args.data_root:
            raise ValueError(f"--dataset {args.dataset} needs --data-root")
        layout = resolve(args.dataset, args.data_root)
        split = layout.val_occ if args.split == "val_occ" and layout.val_occ else layout.val
        cfg = cfg.replace(**{"data.dataset": args.dataset, "data.val_ann": str(split.ann),
                             "data.val_images": str(split.images), "data.val_occ_ann": "",
                             "data.val_gt": str(layout.val_gt or ""), "data.det_file": ""})
        args.split = "val"
    return model, cfg


def sweep(model, cfg, args) -> dict:
    """{"clean": metrics, "keypoint": {attack: {radius: AP}}, "per_keypoint": {attack: {joint: drop}},
    "part": {attack: {part: AP}}}"""
    import torch

    from datasets.attacks import make_attack
    from datasets.codec import HeatmapCodec
    from datasets.meta import get as dataset_meta
    from datasets.topdown_dataset import TopDownDataset
    from trainables.engine import evaluate
    from trainables.worker import load_eval_split

    data = cfg.data
    skeleton, protocol = dataset_meta(data.dataset).skeleton, dataset_meta(data.dataset).protocol
    ann, images = (data.val_occ_ann, data.val_occ_images or data.val_images) if args.split == "val_occ" \
        else (data.val_ann, data.val_images)
    if not ann:
        raise ValueError(f"the trial has no {args.split} split")
    split = load_eval_split(protocol, ann, images, skeleton, args.max_samples,
                            gt_mat=data.val_gt if args.split == "val" else "", visibility_splits=False)
    codec = HeatmapCodec((data.input_h, data.input_w), sigma=data.sigma, decode=data.decode)
    key = "PCKh_0.5" if protocol == "mpii" else "AP"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)

    def score(attack=None) -> float:
        dataset = TopDownDataset(split.records, skeleton, codec, train=False, attack=attack)
        return evaluate(model, dataset, split.scorer, codec, device, data.flip_test)[key]

    clean = score()
    result = {"metric": key, "split": args.split, "persons": len(split.records), "clean": clean,
              "keypoint": {}, "per_keypoint": {}, "part": {}}
    for name in args.attacks:
        if name.startswith("keypoint"):
            result["keypoint"][name] = {r: clean if r == 0 else score(make_attack(name, skeleton, radius=r))
                                        for r in args.radii}
            radius = max(args.radii)
            if args.per_keypoint and radius > 0:
                result["per_keypoint"][name] = {
                    joint: clean - score(make_attack(name, skeleton, radius=radius, joints=(j,)))
                    for j, joint in enumerate(skeleton.keypoints)}
        else:
            result["part"][name] = {part: score(make_attack(name, skeleton, part=part)) for part, _ in skeleton.parts}
    return result


def write_report(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    metric = result["metric"]
    files = [out / "robustness.json", out / "robustness.md"]
    files[0].write_text(json.dumps(result, indent=1))
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
    files[1].write_text("\n".join(lines))
    if result["keypoint"]:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, curve in result["keypoint"].items():
            ax.plot(list(curve), list(curve.values()), marker="o", label=name)
        ax.set(xlabel="attack radius (input px)", ylabel=metric, title=f"{metric} vs keypoint attack size")
        ax.legend(), ax.grid(alpha=0.3)
        files.append(out / "keypoint_attacks.png")
        fig.tight_layout(), fig.savefig(files[-1], dpi=120), plt.close(fig)
    for kind, title in (("per_keypoint", "per-keypoint drop"), ("part", "part attacks")):
        for name, values in result[kind].items():
            fig, ax = plt.subplots(figsize=(7, 3.5))
            ax.bar(range(len(values)), list(values.values()))
            ax.set_xticks(range(len(values)), list(values), rotation=60, ha="right", fontsize=7)
            ax.set(ylabel=f"{metric} drop" if kind == "per_keypoint" else metric, title=f"{name}: {title}")
            files.append(out / f"{name}_{kind}.png")
            fig.tight_layout(), fig.savefig(files[-1], dpi=120), plt.close(fig)
    return files


def log_to_mlflow(result: dict, files: list[Path], run_id: str | None, experiment: str, checkpoint: Path) -> str:
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if run_id is None:
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        run_id = client.create_run(exp_id, tags={"mlflow.runName": "robustness",
                                                 "checkpoint": str(checkpoint)}).info.run_id
        client.set_terminated(run_id)
    metric = result["metric"]
    metrics = [mlflow.entities.Metric(f"robustness/clean/{metric}", result["clean"], 0, 0)]
    for name, curve in result["keypoint"].items():
        metrics += [mlflow.entities.Metric(f"robustness/{name}/{metric}", v, 0, int(r)) for r, v in curve.items()]
    for name, parts in result["part"].items():
        metrics += [mlflow.entities.Metric(f"robustness/{name}/{p}/{metric}", v, 0, 0) for p, v in parts.items()]
    client.log_batch(run_id, metrics=metrics)
    for path in files:
        client.log_artifact(run_id, str(path), "robustness")
    return run_id


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.attacks if name not in ATTACKS]
    if unknown:
        parser.error(f"--attacks: unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = fetch_checkpoint(args.run_id, Path(tmp)) if args.run_id else args.checkpoint
            model, cfg = load_trial(checkpoint, args)
            result = sweep(model, cfg, args)
            files = write_report(result, args.out)
            run_id = log_to_mlflow(result, files, args.run_id, args.experiment, checkpoint)
    except ValueError as err:
        print(f"robustness.py: error: {err}", file=sys.stderr)
        return 2
    print((args.out / "robustness.md").read_text())
    print(f"report in {args.out}; logged to MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
