"""Train one trial without Ray, for debugging: `python -m trainables.worker --set optim.epochs=2 lja.p=0.5`.

Imports neither Ray nor MLflow (tests/benchmarks/gpu_check.py runs it on hosts without them). --profile records a
short torch.profiler window of the first epoch (trainables/profiling.py).

With no data.train_ann the trial trains on the embedded synthetic dataset. An --out holding a checkpoint is
continued only with --resume, and then only with the settings it was trained with (optim.epochs and runtime.* may
change); otherwise the run is refused naming the settings that differ (exit 2). The trainer itself is
trainables/train.py (`fit`); checkpoints are trainables/checkpoint.py; the local and Ray Train contexts
trainables/runtime.py.
"""
from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path

from datasets.cli import output_dir

# torch and the trainer are imported where used: a command line the parser refuses exits in a fraction of a second.


# What a resumed run may set otherwise than its checkpoint: how long it trains and where it runs.
RESUMABLE_CHANGES = ("optim.epochs", "runtime.")


def reuse_refusal(out: Path, cfg, resume: bool) -> str | None:
    """Why the trial `cfg` must not run in `out` (None when it may): a checkpoint there is continued only when
    asked to (--resume) and only with its own settings, apart from RESUMABLE_CHANGES."""
    from trainables import checkpoint

    if not checkpoint.has_state(out):
        return f"--resume: {out} holds no checkpoint to continue" if resume else None
    changes = checkpoint.config_changes(out, cfg)
    if resume:
        changes = {k: v for k, v in changes.items() if not k.startswith(RESUMABLE_CHANGES)}
    if not resume or changes:
        listed = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changes.items())
        what = f"a checkpoint of other settings ({listed})" if changes else \
            f"the checkpoint of this trial after epoch {checkpoint.saved_epochs(out)}"
        advice = "choose another --out" if resume else "pass --resume to continue it or choose another --out"
        return f"--out {out} holds {what}; {advice}"
    return None


def key_value(text: str) -> tuple[str, str]:
    """A --set item: KEY=VALUE, KEY one of TrialConfig's flat keys (its values are checked by from_flat)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. optim.epochs=2), got {text!r}")
    return key.strip(), value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train one trial without Ray (for debugging).")
    parser.add_argument("--out", type=output_dir, default=Path(".cache/local-trial"))
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out (its settings; "
                        "optim.epochs and runtime.* may change)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", type=key_value,
                        help="trial config overrides, e.g. optim.epochs=2 lja.p=0.5")
    parser.add_argument("--profile", nargs="?", const=True, default=None, type=output_dir, metavar="DIR",
                        help="record a few training steps of the first epoch with torch.profiler and write the ops' "
                        "table, the trace and what bounds the step (data, device or host) to DIR (default: "
                        "--out/profile; trainables/profiling.py)")
    args = parser.parse_args(argv)
    if args.profile is True:
        args.profile = args.out / "profile"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from trainables.config import TrialConfig

    try:  # every key, type and range, before anything is generated or written
        cfg = TrialConfig.from_flat(dict(args.set)).validate()
    except ValueError as err:
        parser.error(f"--set: {err}")
    from datasets.synthetic import SyntheticSpec, ensure_dataset
    from trainables import checkpoint
    from trainables.runtime import LocalReporter
    from trainables.train import fit

    try:
        if not cfg.data.train_ann:
            cfg = with_synthetic_paths(cfg, ensure_dataset(SyntheticSpec(seed=cfg.runtime.seed)))
        refusal = reuse_refusal(args.out, cfg, args.resume)
        if refusal:
            print(f"error: {refusal}", file=sys.stderr)
            return 2
        changed = checkpoint.config_changes(args.out, cfg) if args.resume else {}
        for key, (old, new) in changed.items():
            logging.info("resuming with %s = %r (the checkpoint's: %r)", key, new, old)
        fit(cfg, LocalReporter(args.out), profile_dir=args.profile)
    except checkpoint.CheckpointNotWritten as err:
        print(f"error: --out {err.strerror}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in FULL:
            raise
        print(f"error: {err.filename or 'a file'}: {err.strerror}; free space there and run again", file=sys.stderr)
        return 1
    return 0


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # the environment, not a bug: a sentence, not a traceback


def with_synthetic_paths(cfg, paths):
    """`cfg` reading the generated synthetic dataset at `paths` (datasets.synthetic.ensure_dataset's result)."""
    return cfg.replace(**{
        "data.root": str(paths.root),
        "data.train_ann": str(paths.annotations["train"]),
        "data.val_ann": str(paths.annotations["val"]),
        "data.val_occ_ann": str(paths.annotations["val_occ"]),
        "data.train_images": str(paths.images["train"]),
        "data.val_images": str(paths.images["val"]),
        "data.val_occ_images": str(paths.images["val"]),
    })


if __name__ == "__main__":
    sys.exit(main())
