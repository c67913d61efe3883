"""What the saliency tests share: a black pixel as Fashion-MNIST normalises it, random maps."""

from __future__ import annotations

import torch

BLACK = -0.2860 / 0.3530  # a black pixel, normalised as Fashion-MNIST is


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
