"""A trial's data: the whole dataset normalised and resident on the training device, with the
fixed probe set that saliency maps are computed on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from saliq.data import DatasetInfo
from saliq.data.sources import dataset_info, load_dataset
from saliq.data.subsets import imbalance_indices, probe_indices, subset_indices

__all__ = ["TrialData", "prepare_data"]


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
    info = dataset_info(dataset)
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
