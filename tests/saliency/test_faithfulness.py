"""Deletion AUC: lower for the model's own maps than for random ones."""

from __future__ import annotations

from saliency_helpers import BLACK, rand

from saliq.saliency.attribution import attribute
from saliq.saliency.faithfulness import deletion_auc

# --- faithfulness ------------------------------------------------------------------------


def test_deletion_auc_is_lower_for_the_models_own_maps(trained_seed_cnn, fashion_small):
    x, y = fashion_small.test_x[:100], fashion_small.test_y[:100]
    maps = attribute(trained_seed_cnn, x, y, "saliency")
    own = deletion_auc(trained_seed_cnn, x, y, maps, baseline=BLACK)
    for seed in range(2):
        random = deletion_auc(trained_seed_cnn, x, y, rand(100, 28, 28, seed=seed),
                              baseline=BLACK)
        assert own < random - 0.03
    assert 0 <= own <= 1
    assert not trained_seed_cnn.training


