"""The best trial's model in the MLflow Model Registry: logged with mlflow.pytorch (input example, signature), in
the trial's own run, registered under the experiment's name with its metrics and search config attached.

Registering is idempotent: a version made from the same run is found again (its source run), never duplicated.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from dashboards.search_data import Search, Trial
from search.stores import REPO_ROOT

# What mlflow's registration prints to stderr on every run (report.py says what it registered in its own words).
REGISTRATION_CHATTER = ("Successfully registered model ", "Created version '", "Registered model ")


@contextlib.contextmanager
def without_registration_chatter():
    """stderr without MLflow's registration lines; every other line written meanwhile still reaches it."""
    caught = io.StringIO()
    try:
        with contextlib.redirect_stderr(caught):
            yield
    finally:
        sys.stderr.writelines(line for line in caught.getvalue().splitlines(keepends=True)
                              if not line.startswith(REGISTRATION_CHATTER))



def existing_version(client: MlflowClient, name: str, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    mine = [v for v in versions if v.run_id == run_id]
    return max(mine, key=lambda v: int(v.version)) if mine else None


def load_trial_model(client: MlflowClient, run_id: str):
    """(model in eval mode, TrialConfig) from the trial's best checkpoint artifacts."""
    from search.stores import fetch_checkpoint
    from trainables.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        return load_checkpoint(fetch_checkpoint(run_id, Path(tmp), client))


def input_example(cfg):
    """One real evaluation crop, normalised as the model sees it (1, 3, H, W); zeros if the split is unreadable."""
    import numpy as np

    from datasets import meta
    from trainables.build import build_codec
    from datasets.evaluation.metrics import quiet
    from datasets.topdown.dataset import TopDownDataset
    from datasets.evaluation.splits import load_eval_split

    data = cfg.data
    try:
        skeleton = meta.get(data.dataset).skeleton
        with quiet():
            split = load_eval_split(meta.get(data.dataset).protocol, data.val_ann, data.val_images, skeleton, 1,
                                    gt_mat=data.val_gt, visibility_splits=False)
        codec = build_codec(cfg)
        return TopDownDataset(split.records, skeleton, codec, train=False)[0]["image"][None].numpy()
    except (OSError, ValueError, IndexError, TypeError):
        return np.zeros((1, 3, data.input_h, data.input_w), dtype=np.float32)


def register_best_model(client: MlflowClient, search: Search, trial: Trial) -> dict:
    import mlflow
    import torch
    import torchvision

    name = search.experiment
    found = existing_version(client, name, trial.run_id)
    if found is not None:
        return {"name": name, "version": int(found.version), "model_uri": f"models:/{name}/{found.version}",
                "run_id": trial.run_id, "reused": True}
    model, cfg = load_trial_model(client, trial.run_id)
    scores = {k: v for k, v in trial.at_best(search.metric).items() if k != "epoch"}
    mlflow.set_tracking_uri(client.tracking_uri)
    ended = client.get_run(trial.run_id).info  # reopening the run below would restamp its status and end time
    with mlflow.start_run(run_id=trial.run_id), without_registration_chatter():
        info = mlflow.pytorch.log_model(
            model, name="model", input_example=input_example(cfg), registered_model_name=name,
            # The nn.Module itself (torch.export would fix the batch size to the example's); it refers to
            # trainables.*, so the package travels with it and the model loads outside this checkout.
            serialization_format="pickle", code_paths=[str(REPO_ROOT / "trainables")],
            # Stated, not inferred: inference re-imports the model in a subprocess (slow) to guess them.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"torchvision=={torchvision.__version__.split('+')[0]}", "timm", "numpy"],
            params={k: v for k, v in cfg.flat().items() if not k.startswith(("data.", "runtime."))},
        )
    client.set_terminated(trial.run_id, status=ended.status, end_time=ended.end_time)
    version = str(info.registered_model_version)
    config = {k: v for k, v in trial.params.items() if not k.startswith(("data.", "runtime."))}
    client.set_model_version_tag(name, version, "source_run", trial.run_id)
    client.set_model_version_tag(name, version, "trial", trial.name)
    client.set_model_version_tag(name, version, "best_epoch", str(trial.at_best(search.metric).get("epoch")))
    client.set_model_version_tag(name, version, "search_parent_run", search.parent_run_id)
    for metric, value in scores.items():
        client.set_model_version_tag(name, version, f"metric.{metric}", f"{value:.6f}")
    summary = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
    client.update_model_version(name, version, description=(
        f"Best trial {trial.name} of search {name} (space {search.space}, by {search.metric}). {summary}.\n\n"
        f"Search config:\n{json.dumps(config, indent=1, sort_keys=True, default=str)}"))
    client.update_registered_model(name, description=f"Best models of the occpose search experiment {name}.")
    return {"name": name, "version": int(version), "model_uri": f"models:/{name}/{version}",
            "run_id": trial.run_id, "reused": False}
