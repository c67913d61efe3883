"""Saliency maps and how far two sets of them agree: the vocabulary, without torch.

- `attribution`: Captum attributions as DESIGN.md's normalised maps;
- `similarity`: SSIM, Spearman and top-k IoU between maps (fidelity);
- `faithfulness`: deletion AUC (does a model rely on the pixels its maps mark?);
- `pictures`: grids of inputs and maps.

A config validates against these names without importing torch or Captum.
"""

from __future__ import annotations

__all__ = ["FIDELITY_METRICS", "GRADIENT_METHODS", "METHODS"]

METHODS = ("saliency", "integrated_gradients", "smoothgrad", "gradcam", "input_x_gradient")
FIDELITY_METRICS = ("ssim", "spearman", "topk_iou")
# Methods whose map is one gradient of the model: a loss can train through them
# (explanation distillation differentiates the map again, with create_graph=True).
GRADIENT_METHODS = ("saliency", "input_x_gradient", "gradcam")
