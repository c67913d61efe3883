"""The live progress lines: one per trial event, with the tally and the best so far."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from saliq.sweep.progress import Progress
from saliq.sweep.spec import parse_sweep


@dataclass
class FakeTrial:  # what Progress reads of Tune's Trial
    trial_id: str
    status: str = "RUNNING"
    last_result: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    num_failures: int = 0
    local_path: str | None = None


def _progress(objective: dict) -> tuple[Progress, io.StringIO]:
    sweep = parse_sweep({"name": "q", "trial": {"limit": {"train": 100}},
                         "search": {"qat.lr": {"loguniform": [0.0001, 0.01]}},
                         "objective": objective, "budget": {"num_samples": 4}})
    stream = io.StringIO()
    return Progress(sweep, stream), stream


def test_lines_for_start_finish_divergence_and_failure():
    progress, stream = _progress({"weighted": {"accuracy": 0.5, "fidelity": 0.5}})
    a = FakeTrial("a", config={"qat.lr": 0.00123456})
    b = FakeTrial("b")
    progress.on_trial_start(0, [a, b], a)
    a.last_result = {"accuracy": 0.81234, "fidelity": 0.7, "objective": 0.75, "diverged": 0.0}
    progress.on_trial_complete(1, [a, b], a)
    a.status = "TERMINATED"
    b.last_result = {"diverged": 1.0, "failure_reason": "QAT loss became nan"}
    progress.on_trial_complete(2, [a, b], b)
    b.status = "TERMINATED"
    c = FakeTrial("c", status="ERROR", num_failures=2, local_path="/tune/c")
    progress.on_trial_error(3, [a, b, c], c)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[q] trial a started: qat.lr=0.00123"
    assert lines[1] == ("[q] trial a finished: accuracy 0.8123, fidelity 0.7 | 1/4 done, "
                        "1 running, 0 failed | best objective 0.7500 (a)")
    assert lines[2] == ("[q] trial b diverged: QAT loss became nan | 2/4 done, 0 running, "
                        "1 failed | best objective 0.7500 (a)")
    assert lines[3].startswith("[q] trial c failed (retries: 2); see /tune/c | 2/4 done")
    assert lines[3].endswith("2 failed | best objective 0.7500 (a)")


def test_stopped_early_and_pareto_count():
    progress, stream = _progress({"pareto": {"accuracy": "max", "model_bits": "min"}})
    trials = [FakeTrial(t, status="TERMINATED", last_result={
        "accuracy": acc, "model_bits": bits, "diverged": 0.0})
        for t, acc, bits in (("a", 0.9, 8e5), ("b", 0.8, 4e5), ("c", 0.7, 9e5))]
    stopped = FakeTrial("d", last_result={"accuracy": 0.2, "model_bits": 1e5, "epoch": 1.0})
    progress.on_trial_complete(1, [*trials, stopped], stopped)
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("[q] trial d stopped early by ASHA after QAT epoch 1: accuracy 0.2")
    assert line.endswith("| 4/4 done, 0 running, 0 failed | 2 trial(s) on the Pareto frontier")
