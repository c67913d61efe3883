# numerics fixtures
# One small Fashion-MNIST subset and one FP reference (the seed CNN after one epoch on it),
# trained once per session into a temporary FP cache: the saliency, groups and trial tests
# share it, and no test reads or writes ~/.cache.
from __future__ import annotations

import pytest
import torch

from saliq import reference
from saliq.build import build_model
from saliq.config import parse_trial_config
from saliq.data.tensors import prepare_data


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # Two cores shared with other jobs: torch's intra-op threads then wait on each other
    # (one FP epoch at batch 10 took 43 s with 2 threads, 5 s with 1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL_TRIAL = {
    "dataset": "fashion-mnist",
    "limit": {"train": 1000, "test": 300},
    "model": "seed-cnn",
    "precision": {"default": {"weight_bits": 4, "act_bits": 4}},
    "fp": {"epochs": 1, "lr": 0.002},
    "qat": {"epochs": 1, "lr": 0.0005},
    "saliency": {"probe_size": 32},
    "device": "cpu",
}


@pytest.fixture(scope="session")
def small_trial_config():
    """A w4a4 seed-CNN trial on `fashion_small`: 1 FP epoch, 1 QAT epoch."""
    return parse_trial_config(SMALL_TRIAL)


@pytest.fixture(scope="session")
def fashion_small(small_trial_config):
    """The data of `small_trial_config`: Fashion-MNIST, 1000 training and 300 test images,
    a 32-image probe set, on the CPU."""
    c = small_trial_config
    return prepare_data(c.dataset, "cpu", train_limit=c.limit.train, test_limit=c.limit.test,
                        probe_size=c.saliency.probe_size)


@pytest.fixture(scope="session")
def fp_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fp-cache")


@pytest.fixture(scope="session")
def fp_reference(small_trial_config, fashion_small, fp_cache_dir):
    """The FP reference of `small_trial_config`, trained once and cached in `fp_cache_dir`."""
    ref, _ = reference.load_or_train(small_trial_config, fashion_small, torch.device("cpu"),
                                     fp_cache_dir)
    return ref


@pytest.fixture(scope="session")
def trained_seed_cnn(small_trial_config, fp_reference):
    """The FP reference as a model, in eval mode (test accuracy ~0.7). Shared: copy it
    before changing its mode or flags."""
    model = build_model(small_trial_config, full_precision=True)
    model.load_state_dict(fp_reference.state_dict)
    return model.eval()
