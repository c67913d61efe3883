"""The live progress: one line per trial event with the tally and the best so far, in the
terminal and the sweep's log file; for a large sweep one summary line in the terminal."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from saliq.frontier import hypervolume, non_dominated, reference_point
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


def test_every_event_goes_to_the_log_file_too(tmp_path):
    sweep = parse_sweep({"name": "q", "trial": {"limit": {"train": 100}},
                         "search": {"qat.lr": {"loguniform": [0.0001, 0.01]}},
                         "budget": {"num_samples": 4}})
    stream = io.StringIO()
    progress = Progress(sweep, stream, log_path=tmp_path / "progress.log")
    a = FakeTrial("a", config={"qat.lr": 0.001})
    progress.on_trial_start(0, [a], a)
    a.last_result = {"accuracy": 0.8, "fidelity": 0.7, "objective": 0.75, "diverged": 0.0}
    progress.on_trial_complete(1, [a], a)
    progress.on_experiment_end([a])
    logged = (tmp_path / "progress.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in logged] == stream.getvalue().splitlines()
    assert len(logged) == 2 and logged[0][:4].isdigit()  # each line with its time


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _big_sweep(tmp_path, stream, clock):
    sweep = parse_sweep({"name": "big", "trial": {"limit": {"train": 100}},
                         "search": {"qat.lr": {"loguniform": [0.0001, 0.01]}},
                         "objective": {"pareto": {"accuracy": "max", "model_bits": "min"}},
                         "budget": {"num_samples": 100}})
    return Progress(sweep, stream, log_path=tmp_path / "progress.log", clock=clock)


def _run_ten_trials(progress, clock) -> list[FakeTrial]:
    """Ten trials one minute apart: 8 finish, one diverges, one is stopped early."""
    trials = []
    for i in range(10):
        trial = FakeTrial(f"t{i}", config={"qat.lr": 0.001})
        trials.append(trial)
        progress.on_trial_start(i, trials, trial)
        clock.now += 60
        trial.last_result = {"accuracy": 0.5 + i / 100, "model_bits": 1e6 * (1 + i % 3),
                             "diverged": 0.0}
        if i == 8:
            trial.last_result = {"diverged": 1.0, "failure_reason": "QAT loss became nan"}
        if i == 9:
            trial.last_result = {"accuracy": 0.2, "model_bits": 1e5, "epoch": 1.0}
        progress.on_trial_complete(i, trials, trial)
        trial.status = "TERMINATED"
        progress.on_step_end(i, trials)
    return trials


def test_a_large_sweep_prints_a_summary_line_and_logs_every_event(tmp_path):
    stream, clock = io.StringIO(), Clock()
    progress = _big_sweep(tmp_path, stream, clock)
    trials = _run_ten_trials(progress, clock)
    running = FakeTrial("t10", config={"qat.lr": 0.002})
    progress.on_trial_start(10, [*trials, running], running)
    progress.on_experiment_end([*trials, running])

    lines = stream.getvalue().splitlines()
    # a pipe, not a terminal: a line at the first step, then every 30 s (here: every trial)
    assert len(lines) == 11 and all(line.startswith("[big] ") for line in lines)
    # the frontier of the 8 finished: t5 (0.55, 3e6), t6 (0.56, 1e6), t7 (0.57, 2e6) ...
    points = [[0.5 + i / 100, 1e6 * (1 + i % 3)] for i in range(8)]
    volume = hypervolume(points, ["max", "min"], reference_point(points, ["max", "min"]))
    assert lines[-1] == (
        "[big] 10/100 done (8 finished, 1 failed, 1 stopped), 1 running | "
        f"{len(non_dominated(points, ['max', 'min']))} trial(s) on the Pareto frontier | "
        f"hypervolume {volume:.4g} | 1.0 trials/min | ETA 1 h 30 min")
    logged = (tmp_path / "progress.log").read_text().splitlines()
    assert len(logged) == 21  # 11 starts, 8 finished, 1 diverged, 1 stopped
    assert "trial t8 diverged: QAT loss became nan" in logged[17]
    assert "trial t10 started" in logged[-1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_summary_line_is_rewritten_in_place(tmp_path):
    stream, clock = Terminal(), Clock()
    progress = _big_sweep(tmp_path, stream, clock)
    trials = _run_ten_trials(progress, clock)
    progress.on_experiment_end(trials)
    text = stream.getvalue()
    assert text.count("\r[big] ") == 11 and text.count("\x1b[K") == 11
    assert text.endswith("ETA 1 h 30 min\x1b[K\n") and text.count("\n") == 1
