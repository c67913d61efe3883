"""The architectures a trial can train, by name, and the quantizable layers of each.

Torch-free: a precision plan's layer names validate against `layer_names(arch)` without
building a network. `saliq.models.networks` builds them; a test checks that each built
network's conv and linear layers are exactly these names, in this order.
"""

from __future__ import annotations

__all__ = ["ARCHITECTURES", "activation_layers", "layer_names"]


def _resnet_small_layers(blocks_per_stage: int = 3) -> tuple[str, ...]:
    names = ["conv1"]
    for stage in range(3):
        for block in range(blocks_per_stage):
            prefix = f"stage{stage + 1}.{block}"
            names += [f"{prefix}.conv1", f"{prefix}.conv2"]
            if stage > 0 and block == 0:  # the stage's first block changes width and stride
                names.append(f"{prefix}.shortcut.0")
    return (*names, "fc")


# name -> quantizable layers (conv and linear), first to last
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "seed-cnn": ("conv1", "conv2", "fc1", "fc2"),
    "deep-cnn": ("conv1", "conv2", "conv3", "conv4", "fc1", "fc2"),
    "resnet-small": _resnet_small_layers(),
}


def layer_names(arch: str) -> list[str]:
    """The quantizable layers of `arch`, first to last: the names a precision plan may use.

    >>> layer_names("seed-cnn")
    ['conv1', 'conv2', 'fc1', 'fc2']
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model {arch!r} (use one of {', '.join(ARCHITECTURES)})")
    return list(ARCHITECTURES[arch])


def activation_layers(arch: str) -> list[str]:
    """The layers whose output activation `act_bits` quantizes (a PACT follows them), first to
    last: every layer but the logits layer and, in resnet-small, the shortcut convolutions
    (added to the block's output before its activation).

    >>> activation_layers("seed-cnn")
    ['conv1', 'conv2', 'fc1']
    """
    return [name for name in layer_names(arch)[:-1] if not name.endswith(".shortcut.0")]
