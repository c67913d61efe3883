"""Table II's control rows from records alone: one ceiling per ceiling recipe."""

from __future__ import annotations

from saliq.config import TrialConfig
from saliq.report import table2
from saliq.tracking.runs import TrialRecord


def _record(plan: str, arm: str, seed: int, ceiling: float) -> TrialRecord:
    bits = {"w2a2": 2, "w4a4": 4}[plan]
    qat = {"distill": {"saliency_weight": 30.0}, "dropout": False} if arm == "sal-30" else {}
    config = TrialConfig.model_validate({
        "seed": seed, "qat": qat,
        "precision": {"default": {"weight_bits": bits, "act_bits": bits}}}).model_dump()
    metrics = {"accuracy": 0.8, "accuracy_ceiling": 0.85, "accuracy_floor": 0.84,
               "fp_accuracy": 0.83, "model_bits": bits * 1000.0,
               "fidelity_spearman": 0.7, "fidelity_ceiling_spearman": ceiling,
               "fidelity_floor_spearman": 0.6}
    return TrialRecord(run_id=f"{plan}{arm}{seed}", trial_id=f"{plan}{arm}{seed}",
                       status="FINISHED", config=config,
                       sampled={"precision": plan, "trial": arm, "seed": seed},
                       metrics=metrics)


def _control_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if cells and (cells[0].startswith(("ceiling", "floor", "FP reference"))):
            rows[cells[0]] = cells[1:]
    return rows


def test_configurations_with_their_own_ceiling_get_a_ceiling_row_each():
    records = [_record(plan, arm, seed, {"plain": 0.79, "sal-30": 0.88}[arm] + seed / 100)
               for plan in ("w2a2", "w4a4") for arm in ("plain", "sal-30") for seed in (0, 1)]
    rows = _control_rows(table2(records))
    assert set(rows) == {"FP reference", "floor: FP of another seed",
                         "ceiling of trial=plain: FP trained on with its QAT settings",
                         "ceiling of trial=sal-30: FP trained on with its QAT settings"}
    # each ceiling counts its seeds once (not once per plan) and shows its own fidelity
    plain = rows["ceiling of trial=plain: FP trained on with its QAT settings"]
    assert plain[0] == "2" and plain[3].startswith("0.7950 ± 0.0071")
    distilled = rows["ceiling of trial=sal-30: FP trained on with its QAT settings"]
    assert distilled[0] == "2" and distilled[3].startswith("0.8850 ± 0.0071")
    assert rows["floor: FP of another seed"][0] == "2"


def test_one_ceiling_recipe_is_one_plain_ceiling_row():
    records = [_record(plan, "plain", seed, 0.79) for plan in ("w2a2", "w4a4") for seed in (0, 1)]
    rows = _control_rows(table2(records))
    assert "ceiling: FP trained on with the QAT settings" in rows
    assert sum(name.startswith("ceiling") for name in rows) == 1
