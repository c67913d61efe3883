"""Every arm's spearman retained against one common ceiling, plain QAT's (continued plain
training), beside the retained against its own ceiling that `saliq report` gives: a
distillation arm's own ceiling is FP training with that same distillation, whose maps match
the FP reference more closely (0.88-0.90 against 0.79), so its own-ceiling retained reads
lower. From the report's summary.json:  python against_plain_ceiling.py > against-plain-ceiling.md
"""

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
summary = json.loads((HERE / "summary.json").read_text())
plain = {}  # seed -> the plain ceiling's spearman
for key, group in summary.items():
    if key.endswith("trial=plain"):
        plain.update(zip(group["seeds"], group["fidelity_ceiling_spearman"], strict=True))


def mean_std(values):
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


print("| plan | arm | accuracy | accuracy drop | spearman | retained (own ceiling) "
      "| retained (plain ceiling) | deletion AUC |")
print("|---|---|---|---|---|---|---|---|")
for key, g in summary.items():
    plan, arm = (part.split("=")[1] for part in key.split("/", 2)[2].split(", "))
    common = [(f - lo) / (plain[s] - lo) for s, f, lo in
              zip(g["seeds"], g["fidelity_spearman"], g["fidelity_floor_spearman"], strict=True)]
    low = statistics.mean(g["fidelity_retained_spearman_ci_low"])
    high = statistics.mean(g["fidelity_retained_spearman_ci_high"])
    print(f"| {plan} | {arm} | {mean_std(g['accuracy'])} | {mean_std(g['accuracy_drop'])} "
          f"| {mean_std(g['fidelity_spearman'])} "
          f"| {mean_std(g['fidelity_retained_spearman'])} [{low:.3f}, {high:.3f}] "
          f"| {mean_std(common)} | {mean_std(g['deletion_auc'])} |")
