"""What a search is started with and `--resume` restores: the settings kept in the search's run registry
(search/tracking.py), restored on `--resume`, and the flags given on resume that would change a search half-way."""
from __future__ import annotations

import os

from search.masking import mask_uri
from search.spaces import canonical

# Flags given on resume cannot change a search half-way.
RESUMED_SETTINGS = ("space", "num_samples", "time_budget_min", "epochs", "grace_period", "smoke", "seed", "metric",
                    "workers_per_trial", "cpus_per_worker", "gpus_per_worker", "gpu_augment", "max_concurrent",
                    "dataset", "data_root", "train_root", "det_file", "model", "searcher", "scheduler",
                    "multi_objective", "optuna_storage", "clean_metric", "recipe", "perturbation_interval")
PATH_SETTINGS = ("data_root", "train_root", "det_file")  # the same file however it is spelled
MASKED_SETTINGS = ("optuna_storage",)  # stored with their credentials masked (search/masking.py)


def record_settings(tracker, args) -> None:
    """Keep the new search's settings in its run registry, for `--resume`; a URI's password is kept masked (the
    resume is given it again: search/run.py)."""
    with tracker.registry.editing() as data:
        data["settings"] = {key: mask_uri(getattr(args, key)) if key in MASKED_SETTINGS else getattr(args, key)
                            for key in RESUMED_SETTINGS}


def restore_settings(tracker, args) -> bool:
    """Set `args` to the settings the search was started with; False when the registry holds none. A space saved
    under its old name (`pocc`, `tilting`) comes back under the current one."""
    settings = tracker.registry.read()["settings"]
    if not settings:
        return False
    for key in RESUMED_SETTINGS:
        setattr(args, key, settings.get(key, getattr(args, key)))
    args.space = canonical(args.space)
    return True


def resume_conflicts(tracker, given: dict) -> list[tuple[str, object, object]]:
    """(setting, value given now, value the search was started with) for each flag given explicitly on `--resume`
    that differs from the search's recorded settings: a resumed search cannot change them half-way."""
    stored = tracker.registry.read()["settings"]
    conflicts = []
    for key, value in given.items():
        if key not in RESUMED_SETTINGS or key not in stored:
            continue
        before = stored[key]
        if key == "space":
            value, before = canonical(value), canonical(before)
        if key in MASKED_SETTINGS and value and before and before == mask_uri(before):
            value, before = mask_uri(value), mask_uri(before)  # the real URL given again for a masked one
        same = value == before or (key in PATH_SETTINGS and value and before
                                   and os.path.realpath(value) == os.path.realpath(before))
        if not same:
            conflicts.append((key, value, before))
    return conflicts


def search_finished(tracker) -> bool:
    """Whether the search's parent run ended normally: a `--resume` of it has nothing to do."""
    parent = tracker.parent_run_id
    return parent is not None and tracker.client.get_run(parent).info.status == "FINISHED"
