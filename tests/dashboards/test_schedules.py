"""dashboards/schedules.py: a PBT model's schedule follows its lineage through exploits."""
from dashboards.schedules import _steps, lineage, training_epochs


def test_lineage_takes_the_donors_values_before_each_exploit():
    """Trial 0 trains epochs 1-2, is exploited from trial 1 at epoch 3 (trained with 1's weights of epoch 2), and
    trial 1 was itself exploited from trial 2 at epoch 2: trial 0's model holds 2's epoch 1, 1's epoch 2, then 0's."""
    histories = {
        0: {"hparam/lja.p": {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}, "pbt/donor": {3: 1.0}},
        1: {"hparam/lja.p": {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8}, "pbt/donor": {2: 2.0}},
        2: {"hparam/lja.p": {1: 0.9, 2: 1.0, 3: 1.0, 4: 1.0}},
    }
    assert lineage(histories, 0, "lja.p") == [(1, 0.9, 2), (2, 0.6, 1), (3, 0.3, 0), (4, 0.4, 0)]
    assert lineage(histories, 2, "lja.p") == [(1, 0.9, 2), (2, 1.0, 2), (3, 1.0, 2), (4, 1.0, 2)]
    assert lineage(histories, 1, "lja.p", until=1) == [(1, 0.5, 1)]  # before its own exploit: its own
    # A donor whose run is not in the books: its epochs are left out rather than guessed.
    assert lineage({0: histories[0]}, 0, "lja.p") == [(3, 0.3, 0), (4, 0.4, 0)]


def test_a_population_the_time_budget_stopped_spans_its_share_of_the_training():
    """Set to 6 epochs, stopped by the budget after 3: its λ(t) ends at t = 0.5, where the hand-made schedules'
    t = 0.5 is (it ended at t = 1 before, stretched over the epochs it trained)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    _steps(ax, [(1, 0.25, 0), (2, 0.25, 0), (3, 0.2, 2)], training_epochs({"base.optim.epochs": "6"}, trained=3))
    assert list(ax.lines[0].get_xdata()) == [0.0, 1 / 6, 2 / 6, 0.5]
    plt.close(fig)
    assert training_epochs({}, trained=4) == 4 and training_epochs({"base.optim.epochs": "3"}, trained=4) == 4
