"""The architecture holds: no module imports a higher layer (function-level and type-checking
imports included), and validating a config or a sweep spec needs neither torch, Captum, Ray
nor MLflow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "saliq"

# DESIGN.md's layers, lowest first; a module may import its own layer and the ones below.
LAYERS = {
    "foundation": ["saliq.errors", "saliq.atomic", "saliq.dotted", "saliq.yaml_writer",
                   "saliq.collector"],
    "numerics": ["saliq.quant", "saliq.models", "saliq.saliency", "saliq.modes", "saliq.groups",
                 "saliq.distill",
                 "saliq.cost", "saliq.guided", "saliq.frontier"],
    "data": ["saliq.data"],
    "trial": ["saliq.config", "saliq.build", "saliq.training", "saliq.qat", "saliq.reference",
              "saliq.controls",
              "saliq.setup", "saliq.trial"],
    "sweep": ["saliq.sweep", "saliq.tracking", "saliq.watchdog"],
    "analysis": ["saliq.frontier_file", "saliq.plots", "saliq.views", "saliq.lowest_bits",
                 "saliq.pareto", "saliq.report",
                 "saliq.sanity", "saliq.sensitivity"],
    "interface": ["saliq.cli"],
}
RANK = {prefix: rank for rank, prefixes in enumerate(LAYERS.values()) for prefix in prefixes}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    matches = [p for p in RANK if module == p or module.startswith(p + ".")]
    assert matches, f"{module} is in no layer of LAYERS: add it"
    return RANK[max(matches, key=len)]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every saliq import in the file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("saliq")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module.startswith("saliq")):
            found += [(node.lineno, f"{node.module}.{a.name}")
                      if (PACKAGE.parent / node.module.replace(".", "/") / a.name).exists()
                      or (PACKAGE.parent / f"{node.module.replace('.', '/')}/{a.name}.py").exists()
                      else (node.lineno, node.module) for a in node.names]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_imports_a_higher_layer(path):
    here = _module_name(path)
    upward = [f"line {line}: {target} ({_layer(target)} > {_layer(here)})"
              for line, target in _imports(path) if _layer(target) > _layer(here)]
    assert not upward, f"{here} imports a higher layer: " + "; ".join(upward)


HEAVY = ("torch", "captum", "ray", "mlflow", "optuna", "matplotlib")


@pytest.mark.parametrize("what", [
    "from saliq.config import parse_trial_config; parse_trial_config({'dataset': 'mnist', "
    "'precision': {'layers': {'conv2': {'act_bits': 2}}}})",
    "from saliq.sweep.spec import load_sweep; load_sweep('sweeps/quick.yaml')",
])
def test_validation_imports_none_of_the_heavy_stack(what):
    code = f"import sys; {what}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_every_architecture_declares_the_layers_its_network_has():
    from saliq.models import ARCHITECTURES, activation_layers, layer_names
    from saliq.models.networks import NETWORKS, build_model
    from saliq.quant.api import quantizable_layers
    from saliq.quant.plan import PrecisionPlan

    assert set(NETWORKS) == set(ARCHITECTURES)
    for arch in ARCHITECTURES:
        channels, size = (3, 32) if arch == "resnet-small" else (1, 28)
        model = build_model(arch, PrecisionPlan(), in_channels=channels, image_size=size)
        assert quantizable_layers(model) == layer_names(arch), arch
        assert set(model.activation_of) == set(activation_layers(arch)), arch
