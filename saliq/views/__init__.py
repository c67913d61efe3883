"""The views a quantization researcher looks at, one module per view, each an interactive
page (plotly, self-contained) and a picture (matplotlib) of a sweep's finished trials:

- `pareto`: the Pareto plot, each trial's plan and run link on hover;
- `bit_importance`: per-layer bit-width importance for each objective (PED-ANOVA);
- `layer_bits_heatmap`: layers x bit-widths, each cell the share of the frontier using it;
- `parallel_coordinates`: one axis per searched dimension and per objective;
- `hypervolume`: the frontier's hypervolume against trials finished.

Each view's data is a pure function of `trials.SweepTrials` (`compute`), drawn apart from it;
`writer` writes them all and logs them on the sweep's parent run.
"""

from saliq.views.trials import EmptyView, SweepTrials, sweep_trials
from saliq.views.writer import refresh_views, write_views

__all__ = ["EmptyView", "SweepTrials", "refresh_views", "sweep_trials", "write_views"]
