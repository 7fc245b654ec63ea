"""search/run.py's command line: the flags, the budgets (default, --smoke, real data) and their checks.

Every flag is parsed here; search/run.py runs the pre-flight and the search. `parse_args` exits 2 (argparse) on bad
input, naming the flag, before anything is read or written.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from datasets.cli import non_negative_float, positive_int
from datasets.meta import DATASETS
from search.spaces import ALIASES, SPACES, canonical
from search.stores import DEFAULT_STORAGE_PATH, experiment_name_problem
from search.warm_start import parse_warm_start
from trainables.presets import RECIPES


@dataclass(frozen=True)
class Budget:
    """What a search spends; --smoke picks the small one, explicit flags override either."""

    num_samples: int
    time_budget_min: float  # 0 = no limit
    epochs: int
    grace_period: int
    reduction_factor: int
    train_images: int
    val_images: int
    deconv_channels: int
    batch_size: int


# Sized for a 2-core laptop: see README "Measured" for the wall time and AP this gives.
DEFAULT_BUDGET = Budget(num_samples=5, time_budget_min=13.0, epochs=6, grace_period=1, reduction_factor=3,
                        train_images=1200, val_images=250, deconv_channels=128, batch_size=16)
SMOKE_BUDGET = Budget(num_samples=2, time_budget_min=0.0, epochs=1, grace_period=1, reduction_factor=2, train_images=24,
                      val_images=8, deconv_channels=32, batch_size=16)
# Real datasets on a GPU cluster: whole splits, 256-channel deconvolutions; epochs and trials are the user's to raise
# towards the papers' 210 epochs. Augmentation, model and input size come from the recipe (trainables/presets.py).
REAL_DATA_BUDGET = Budget(num_samples=20, time_budget_min=0.0, epochs=30, grace_period=5, reduction_factor=3,
                          train_images=0, val_images=0, deconv_channels=256, batch_size=32)
def choose_budget(smoke: bool, dataset: str) -> Budget:
    return SMOKE_BUDGET if smoke else DEFAULT_BUDGET if dataset == "synthetic" else REAL_DATA_BUDGET


def experiment_name(text: str) -> str:
    """An argparse type: a name that is one directory in --storage-path and one MLflow experiment."""
    if problem := experiment_name_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Search occlusion-robustness hyperparameters with Ray Tune + Optuna; trials train with "
        "Ray Train and are logged to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--space", type=canonical, choices=sorted(SPACES),
                   help="which search space to explore (" + ", ".join(f"{old}: the old name of {new}"
                                                                for old, new in ALIASES.items()) + ")")
    p.add_argument("--dataset", default="synthetic", choices=sorted(DATASETS),
                   help="dataset; 'synthetic' is generated once and cached under .cache/, the others are read from "
                   "--data-root in their official layout (README 'Datasets')")
    p.add_argument("--data-root", help="directory of the real dataset (coco, crowdpose, ochuman, mpii)")
    p.add_argument("--train-root", help="ochuman only: the COCO directory to train on (default <data-root>/../coco)")
    p.add_argument("--det-file", help="person detector boxes (COCO results json) to evaluate on instead of the "
                   "ground-truth boxes (coco, crowdpose: val; ochuman: the OCHuman split)")
    p.add_argument("--region-store", help="a region store of the training split (python -m "
                   "datasets.topdown.region_store build; README 'Training without a warm cache'): trials read their "
                   "crops from it instead of decoding every image")
    p.add_argument("--num-samples", type=positive_int, help="number of trials (default 5; 2 with --smoke)")
    p.add_argument("--time-budget", dest="time_budget_min", type=non_negative_float,
                   help="minutes the search may run; trials still running then are stopped and it ends "
                   "(default 13 on the embedded default, 0 = no limit; 0 with --smoke)")
    p.add_argument("--epochs", type=positive_int, help="epochs of a trial that is never stopped early "
                   "(default 6; 1 with --smoke)")
    p.add_argument("--grace-period", type=positive_int, help="ASHA: epochs before a trial may be stopped")
    p.add_argument("--max-concurrent", type=positive_int,
                   help="trials at once (default: what the cluster's CPUs fit)")
    p.add_argument("--metric", help="metric the search maximises (default: " + ", ".join(
        f"{meta.occluded_metric} on {meta.name}" for meta in DATASETS.values()) + "; val/O/... is the metric on "
        "the occluded joints)")
    p.add_argument("--workers-per-trial", type=positive_int, default=1, help="Ray Train (DDP) workers per trial")
    p.add_argument("--cpus-per-worker", type=positive_int, default=1, help="CPUs each training worker reserves")
    p.add_argument("--gpus-per-worker", type=non_negative_float, default=0.0, help="GPUs each worker reserves")
    p.add_argument("--gpu-augment", default="off", choices=["auto", "on", "off"],
                   help="decode, warp, LJA and heatmaps on the GPU for the whole batch (auto: on GPUs where the "
                   "space allows it; BENCHMARKS.md)")
    p.add_argument("--address", help="Ray cluster address (host:port or 'auto'); default starts a local Ray")
    p.add_argument("--storage-path", default=str(DEFAULT_STORAGE_PATH),
                   help="where Tune and Train keep experiment state and checkpoints")
    p.add_argument("--experiment", type=experiment_name, help="experiment name (MLflow experiment and Tune run); default: "
                   "<space>-<timestamp>, or the name to continue with --resume")
    p.add_argument("--resume", action="store_true", help="continue the interrupted --experiment with the settings "
                   "it was started with (a flag given with another value is refused)")
    p.add_argument("--check", action="store_true", help="compare the --experiment's trials in Tune's state, the "
                   "Optuna study and MLflow, print those they disagree on (exit 1; 0 when they agree) and exit")
    p.add_argument("--status", action="store_true", help="print the --experiment's trial table (running or "
                   "finished) from its run registry, Tune state and MLflow, changing nothing, and exit")
    p.add_argument("--verbose", action="store_true", help="show Ray's own output (trial tables, result dicts, "
                   "worker logs) on the console; by default it goes to <storage-path>/<experiment>.log")
    p.add_argument("--json", action="store_true", help="also print the search's summary JSON to stdout at the end "
                   "(it is always written to <storage-path>/<experiment>.summary.json)")
    p.add_argument("--smoke", action="store_true", help="shrink data, model and budget to run in ~1 minute")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset, the searcher and the trials")
    p.add_argument("--model", help="model of every trial (python -m trainables.models --list); default "
                   "simplebaseline_r18 on synthetic, simplebaseline_r50 on real datasets")
    p.add_argument("--searcher", default="tpe", choices=["tpe", "random", "grid"],
                   help="Optuna sampler; grid walks the papers' own grids (e.g. the LJA quantity x size table), "
                   "its size being the default --num-samples")
    p.add_argument("--scheduler", default="asha", choices=["asha", "hyperband", "fifo", "pbt", "pb2"],
                   help="early stopping of weak trials on --metric (fifo: none); pbt / pb2: population-based "
                   "training of --num-samples trials (--space lja; README 'Population-based training')")
    p.add_argument("--perturbation-interval", type=positive_int, help="pbt / pb2: epochs between exploits "
                   "(default a third of --epochs, at least 1)")
    p.add_argument("--multi-objective", action="store_true",
                   help="optimise clean and occluded AP together (Optuna's Pareto front, printed at the end)")
    p.add_argument("--optuna-storage", help="Optuna study storage URL (default: optuna.db beside a sqlite MLflow "
                   "store, else in --storage-path), for optuna-dashboard and resume")
    p.add_argument("--warm-start", type=parse_warm_start, metavar="EXPERIMENT[:k]",
                   help="start with the k best trials (default 5) of a finished search's Optuna study in the same "
                   "--optuna-storage; those whose parameters the new space lacks are reported and skipped")
    p.add_argument("--recipe", choices=sorted(RECIPES), help="training recipe of every trial (trainables/presets.py; "
                   "default: synthetic, smoke with --smoke, else HRNet's for the dataset's protocol), e.g. "
                   "oasnet_hourglass for OASNet's ablation setting")
    return p


def explicit_flags(argv=None) -> dict:
    """{dest: value} of the flags given on the command line; argparse's defaults are not among them."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit = explicit_flags(argv)
    if args.check or args.status:
        flag = "--check" if args.check else "--status"
        if args.check and args.status:
            parser.error("--check and --status: give one of them")
        if not args.experiment:
            parser.error(f"{flag} needs --experiment NAME")
        if "://" not in args.storage_path:
            args.storage_path = str(Path(args.storage_path).resolve())
        return args
    if args.space is None:
        parser.error("the following arguments are required: --space")
    if args.warm_start and (args.resume or args.searcher == "grid"):
        parser.error("--warm-start applies to a new tpe or random search (a resumed one keeps its first trials; a "
                     "grid walks its own points)")
    if args.warm_start and args.warm_start.experiment == args.experiment:
        parser.error("--warm-start names the new search itself; give the finished search's experiment name")
    if args.resume and not args.experiment:
        parser.error("--resume needs --experiment NAME (the name printed when the search started)")
    budget = choose_budget(args.smoke, args.dataset)
    if args.searcher == "grid":
        if not SPACES[args.space].grid:
            parser.error(f"--searcher grid: the {args.space} space has no grid; use tpe or random")
        if args.num_samples is None:
            args.num_samples = SPACES[args.space].grid_size()
    for flag in ("num_samples", "time_budget_min", "epochs", "grace_period"):
        if getattr(args, flag) is None:
            setattr(args, flag, getattr(budget, flag))
    args.grace_period = min(args.grace_period, args.epochs)
    if "grace_period" in args.explicit and args.scheduler != "asha":
        parser.error(f"--grace-period applies to --scheduler asha, not {args.scheduler}")
    if args.scheduler in ("pbt", "pb2"):
        needs = {"--space lja": args.space != "lja", "--searcher tpe or random (the initial population)":
                 args.searcher == "grid", "one objective, not --multi-objective": args.multi_objective}
        if missing := [need for need, broken in needs.items() if broken]:
            parser.error(f"--scheduler {args.scheduler} perturbs the lja space's λ, LJA and learning rate: it needs "
                         + "; ".join(missing))
        # (a --resume takes its epochs from the search it continues: its run.py compares the flags given with them)
        if args.perturbation_interval and args.perturbation_interval >= args.epochs and not args.resume:
            parser.error(f"--perturbation-interval {args.perturbation_interval} must be less than --epochs "
                         f"{args.epochs}: a trial's last epoch is not perturbed, so no member would ever exploit")
        args.perturbation_interval = args.perturbation_interval or max(1, args.epochs // 3)
    elif args.perturbation_interval:
        parser.error("--perturbation-interval applies to --scheduler pbt or pb2")
    args.budget = budget
    if args.dataset == "synthetic":
        for flag in ("data_root", "train_root", "det_file", "region_store"):
            if getattr(args, flag):
                parser.error(f"--{flag.replace('_', '-')} applies to real datasets only, not --dataset synthetic")
    elif not args.data_root:
        parser.error(f"--dataset {args.dataset} needs --data-root DIR (its layout: see README 'Datasets')")
    if args.train_root and args.dataset != "ochuman":
        parser.error("--train-root applies to --dataset ochuman only (COCO to train on)")
    if args.det_file and args.dataset == "mpii":
        parser.error("--det-file does not apply to mpii: its protocol scores the annotated persons' boxes")
    args.metric = args.metric or DATASETS[args.dataset].occluded_metric
    args.clean_metric = DATASETS[args.dataset].clean_metric
    if args.multi_objective and args.clean_metric == args.metric:
        parser.error(f"--multi-objective needs distinct clean and occluded metrics; both are {args.metric}")
    args.experiment = args.experiment or f"{args.space}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "://" not in args.storage_path:
        args.storage_path = str(Path(args.storage_path).resolve())
    return args
