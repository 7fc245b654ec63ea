"""The report's figure of a population search (`--scheduler pbt`/`pb2`, search/pbt.py): the λ(t) and
occlusion-strength schedules the best trials' final models were trained with, next to the LJA paper's four
hand-made DSL schedules of λ (constant, step, linear, exponential: trainables/losses.py `LossConfig.lambda_at`) and
its fixed occlusion strength.

A trial's schedule is its lineage: its own `hparam/<key>` values from its last exploit on, and before that its
donor's (`pbt/donor` at the first epoch after an exploit names the donor by trial index), followed back through the
donor's own exploits. The x axis is training progress t in [0, 1]; a learned value holds over its epoch.
"""
from __future__ import annotations

from pathlib import Path

from dashboards.figures import Figure, _save, plt

SHOWN = 3  # best trials drawn
OCCLUSION_KEYS = ("lja.p", "lja.quantity_ratio", "lja.size_ratio")


def lineage(histories: dict[int, dict[str, dict[int, float]]], index: int, key: str,
            until: int | None = None) -> list[tuple[int, float, int]]:
    """[(epoch, value of `key`, trial index whose run trained that epoch)] of trial `index`'s model up to epoch
    `until` (all its epochs: None). `histories`: {trial index: {metric: {epoch: value}}} with `hparam/<key>` and
    `pbt/donor`. A donor missing from `histories` ends the walk (its epochs are left out)."""
    from search.pbt import DONOR_METRIC, HPARAM_PREFIX

    own = histories.get(index, {})
    points = sorted((e, v) for e, v in own.get(HPARAM_PREFIX + key, {}).items() if until is None or e <= until)
    exploits = sorted(e for e in own.get(DONOR_METRIC, {}) if until is None or e <= until)
    if not exploits:
        return [(e, v, index) for e, v in points]
    last = exploits[-1]
    donor = int(own[DONOR_METRIC][last])
    before = lineage(histories, donor, key, last - 1) if donor in histories and donor != index else []
    return before + [(e, v, index) for e, v in points if e >= last]


def load_histories(client, search) -> dict[int, dict[str, dict[int, float]]]:
    """{trial index: {hparam/... and pbt/donor: {epoch: value}}} of the search's trial runs, from MLflow."""
    from search.pbt import DONOR_METRIC, HPARAM_PREFIX, PERTURBED, trial_index

    out = {}
    for trial in search.trials:
        names = [HPARAM_PREFIX + k for k in PERTURBED] + [DONOR_METRIC]
        out[trial_index(trial.trial_id)] = {
            name: {m.step: m.value for m in client.get_metric_history(trial.run_id, name)} for name in names}
    return out


def learned_schedules(client, search, out: Path) -> Figure:
    """Two panels: λ(t) of the SHOWN best trials' models against the four hand-made DSL schedules (at the paper's
    λ_max), and their LJA occlusion strength (p, quantity and size ratios) against the paper's fixed point."""
    from datasets.occlusion.lja import paper_point
    from search.pbt import trial_index
    from trainables.losses import SCHEDULES, LossConfig

    title = "Learned schedules (population-based training)"
    histories = load_histories(client, search)
    best = sorted(search.scored(), key=lambda t: -t.history[search.metric][-1][1])[:SHOWN]  # final models
    data = {t.name: {key: lineage(histories, trial_index(t.trial_id), key) for key in ("loss.lambda_max",
                                                                                          *OCCLUSION_KEYS)}
            for t in best}
    if not any(points for schedules in data.values() for points in schedules.values()):
        return Figure("schedules", title, None, "no trial logged hparam/ metrics (a search made before they were)")
    epochs = training_epochs(search.parent_params, max(e for schedules in data.values()
                                                       for points in schedules.values() for e, _, _ in points))
    fig, (ax_lambda, ax_occ) = plt.subplots(1, 2, figsize=(11, 3.8))
    hand = LossConfig()  # the paper point's λ_max and the schedules' own defaults (step at half-way, ...)
    hand.lambda_max = 0.25
    grid = [i / 200 for i in range(201)]
    for schedule in SCHEDULES:
        hand.schedule = schedule
        ax_lambda.plot(grid, [hand.lambda_at(t) for t in grid], ls="--", lw=1, alpha=0.7, label=f"DSL {schedule}")
    for name, schedules in data.items():
        _steps(ax_lambda, schedules["loss.lambda_max"], epochs, lw=2, label=f"{name} (learned)")
        for key, colour in zip(OCCLUSION_KEYS, ("C0", "C1", "C2")):
            _steps(ax_occ, schedules[key], epochs, color=colour, alpha=1 if name == best[0].name else 0.45,
                   label=f"{key} ({name})" if len(best) == 1 or name == best[0].name else None)
    for (key, value), colour in zip(((k, paper_point()[k]) for k in OCCLUSION_KEYS), ("C0", "C1", "C2")):
        ax_occ.axhline(value, color=colour, ls="--", lw=1, label=f"{key} paper (fixed)")
    ax_lambda.set(xlabel="training progress t", ylabel="λ (DSL limb-loss weight)", title="λ(t)")
    ax_occ.set(xlabel="training progress t", ylabel="value", title="LJA occlusion strength")
    for ax in (ax_lambda, ax_occ):
        ax.set_xlim(0, 1)  # the whole training, however far the population got
        ax.legend(fontsize=7)
    note = (f"Best {len(best)} trials by their final {search.metric}; each curve follows the model through its "
            "exploits (the donor's values before it). Dashed: the paper's hand-made schedules at λ_max = 0.25.")
    return _save(fig, out / "learned_schedules.png", Figure("schedules", title, None, note, data=data))


def training_epochs(parent_params: dict, trained: int) -> int:
    """The epochs t = 1 stands for: those each trial was set to train (the parent run's `base.optim.epochs`), as
    the hand-made schedules' t does - a time budget may stop the population before its end - or, for a search
    whose parent run lacks it, the most any shown trial `trained`."""
    return max(int(float(parent_params.get("base.optim.epochs") or trained)), trained)


def _steps(ax, points, epochs: int, **style) -> None:
    """A learned value per epoch as a step: epoch e holds over t in [(e-1)/epochs, e/epochs]."""
    if not points:
        return
    xs = [0.0] + [e / epochs for e, _, _ in points]
    ys = [points[0][1]] + [v for _, v, _ in points]
    ax.step(xs, ys, where="pre", **style)
