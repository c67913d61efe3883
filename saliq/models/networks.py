"""The networks behind the architecture names of `saliq.models`, each built from a plan.

Every network declares two maps that make a precision plan meaningful for it:
`activation_of[layer]` names the activation module that follows the layer (it becomes the
layer's PACT), and `input_of[layer]` names the layer whose activation feeds it (None: the
image), which is what bit-operation counts need; `gradcam_layer` names the module whose
output Grad-CAM explains (the last convolutional feature map).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from saliq.quant.api import prepare
from saliq.quant.plan import PrecisionPlan

__all__ = ["NETWORKS", "DeepCNN", "SeedCNN", "SmallResNet", "build_model"]


class SeedCNN(nn.Module):
    """The first paper's CNN: conv 32@3x3 -> conv 64@3x3 -> max-pool 2 -> fc 128 -> fc 10."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.act2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.drop1 = nn.Dropout(dropout)
        side = (image_size - 4) // 2
        self.fc1 = nn.Linear(64 * side * side, 128)
        self.act3 = nn.ReLU()
        self.drop2 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(128, num_classes)
        self.activation_of = {"conv1": "act1", "conv2": "act2", "fc1": "act3"}
        self.input_of = {"conv1": None, "conv2": "conv1", "fc1": "conv2", "fc2": "fc1"}
        self.gradcam_layer = "act2"

    def forward(self, x):
        x = self.act2(self.conv2(self.act1(self.conv1(x))))  # (B, 64, H-4, W-4)
        x = self.drop1(self.pool(x)).flatten(1)
        x = self.drop2(self.act3(self.fc1(x)))
        return self.fc2(x)


class DeepCNN(nn.Module):
    """A deeper CNN: two conv blocks (32, 64 channels, two padded 3x3 convs each), fc 256, fc."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.act3 = nn.ReLU()
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
        self.act4 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.drop1 = nn.Dropout(dropout)
        side = image_size // 4
        self.fc1 = nn.Linear(64 * side * side, 256)
        self.act5 = nn.ReLU()
        self.drop2 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(256, num_classes)
        self.activation_of = {"conv1": "act1", "conv2": "act2", "conv3": "act3", "conv4": "act4",
                              "fc1": "act5"}
        self.input_of = {"conv1": None, "conv2": "conv1", "conv3": "conv2", "conv4": "conv3",
                         "fc1": "conv4", "fc2": "fc1"}
        self.gradcam_layer = "act4"

    def forward(self, x):
        x = self.pool1(self.act2(self.conv2(self.act1(self.conv1(x)))))  # (B, 32, H/2, W/2)
        x = self.pool2(self.act4(self.conv4(self.act3(self.conv3(x)))))  # (B, 64, H/4, W/4)
        x = self.drop1(x).flatten(1)
        return self.fc2(self.drop2(self.act5(self.fc1(x))))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + skip)


class SmallResNet(nn.Module):
    """A ResNet-20-style network for 3x32x32 inputs: stem, 3 stages of 3 basic blocks, fc."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10,
                 dropout: float = 0.0, width: int = 16, blocks_per_stage: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.activation_of = {"conv1": "relu"}
        self.input_of: dict[str, str | None] = {"conv1": None}
        last, cin = "conv1", width
        stages = []
        for s, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(BasicBlock(cin, cout, stride))
                p = f"stage{s + 1}.{b}"
                self.activation_of[f"{p}.conv1"] = f"{p}.relu1"
                self.activation_of[f"{p}.conv2"] = f"{p}.relu2"
                self.input_of[f"{p}.conv1"] = last
                self.input_of[f"{p}.conv2"] = f"{p}.conv1"
                if stride != 1 or cin != cout:
                    self.input_of[f"{p}.shortcut.0"] = last
                last, cin = f"{p}.conv2", cout
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        self.input_of["fc"] = last
        self.gradcam_layer = "stage3"

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))  # (B, 64, H/4, W/4)
        return self.fc(self.drop(self.pool(x).flatten(1)))


NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "seed-cnn": SeedCNN,
    "deep-cnn": DeepCNN,
    "resnet-small": SmallResNet,
}


def build_model(
    arch: str,
    plan: PrecisionPlan,
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    dropout: float = 0.25,
    alpha_init: float = 10.0,
    alpha_layers: dict[str, float] | None = None,
) -> nn.Module:
    """`arch` with its layers quantized as `plan` says (see `saliq.quant.api.prepare`)."""
    if arch not in NETWORKS:
        raise ValueError(f"unknown model {arch!r} (use one of {', '.join(NETWORKS)})")
    model = NETWORKS[arch](in_channels=in_channels, image_size=image_size,
                           num_classes=num_classes, dropout=dropout)
    return prepare(model, plan, alpha_init, alpha_layers)
