"""dashboards/schedules.py: a PBT model's schedule follows its lineage through exploits."""
from dashboards.schedules import lineage


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
