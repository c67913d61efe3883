"""A sweep whose disk fills: refused at start with one line, stopped in flight with one line
naming the path and the space it needs, and finished by `saliq sweep resume` once there is
room. The disk is a small tmpfs mounted for the test (skipped where mounting is not allowed)."""

from __future__ import annotations

import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import runs_of, saliq, saliq_background, steps, wait_until

EPOCHS, TRIALS = 2, 3


@contextmanager
def small_disk(folder: Path, size: str):
    folder.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _spec(tmp_path: Path, storage: Path) -> Path:
    spec = {
        "name": "full-disk",
        "trial": {"dataset": "fashion-mnist", "limit": {"train": 1024, "test": 128},
                  "fp": {"epochs": 1}, "qat": {"epochs": EPOCHS}, "batch_size": 64,
                  "saliency": {"probe_size": 16}, "controls": {"ceiling": False, "floor": False}},
        "search": {"precision.default.weight_bits": {"choice": [2, 4, 8]}},
        "objective": {"pareto": {"accuracy": "max", "fidelity": "max"}},
        "sampler": {"type": "grid"},
        "budget": {"num_samples": TRIALS, "max_concurrent": 1},
        "storage": str(storage),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _free_mib(path: Path) -> float:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize / (1 << 20)


@pytest.mark.slow
def test_a_sweep_without_room_is_refused_in_one_line_and_writes_nothing(tmp_path):
    with small_disk(tmp_path / "disk", "32m") as disk:
        done = saliq("sweep", "run", str(_spec(tmp_path, disk / "runs")), timeout=300,
                     env={"SALIQ_CACHE_DIR": str(tmp_path / "cache")})
        left = list(disk.iterdir())
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(rf"saliq: {re.escape(str(disk / 'runs' / 'full-disk'))}: \d+ MiB free "
                        r"on its filesystem, a sweep needs 256 MiB there \(SALIQ_MIN_FREE_MB "
                        r"sets it\): free some space, or choose --storage on another disk, then "
                        r"run the sweep again", lines[0]), lines[0]
    assert left == []


@pytest.mark.slow
def test_a_disk_that_fills_stops_the_sweep_and_resume_finishes_it(tmp_path):
    env = {"SALIQ_CACHE_DIR": str(tmp_path / "cache"), "SALIQ_MIN_FREE_MB": "48"}
    with small_disk(tmp_path / "disk", "400m") as disk:
        spec = _spec(tmp_path, disk / "runs")
        store = disk / "runs" / "mlflow.db"
        client = MlflowClient(tracking_uri=f"sqlite:///{store}")
        log = tmp_path / "driver.log"
        ballast = disk / "ballast"
        with saliq_background("sweep", "run", str(spec), log=log, env=env,
                              cwd=tmp_path) as driver:
            def an_epoch_logged():
                found = runs_of(client, "full-disk") if store.exists() else []
                return any(steps(client, r.info.run_id) for r in found)

            wait_until(an_epoch_logged, 420, "an epoch logged", driver, log)
            # leave 30 MiB: below the 48 the sweep needs, still room for Tune's state
            room = int((_free_mib(disk) - 30) * (1 << 20))
            subprocess.run(["fallocate", "-l", str(room), str(ballast)], check=True)
            code = driver.wait(timeout=300)
        text = log.read_text()
        assert code == 1, text[-3000:]
        assert re.search(r"sweep full-disk stopped after \d+ s: \d trials finished, [1-3] failed "
                         r"\(sweep id [\w-]+\); the disk is almost full: ", text), text[-3000:]
        assert "once that is fixed: saliq sweep resume full-disk" in text
        assert "done in" not in text and "Pareto frontier:" not in text
        # the parent and the trial runs that did not finish end FAILED with the cause
        parent = runs_of(client, "full-disk", "sweep")[0]
        unfinished = [r for r in runs_of(client, "full-disk") if r.info.status != "FINISHED"]
        assert unfinished
        for run in [parent, *unfinished]:
            assert run.info.status == "FAILED"
            assert run.data.tags["saliq.failure_reason"].startswith("the disk is almost full: ")
        stop = re.search(r"the disk is almost full: (\S+): (\d+) MiB free on its filesystem, "
                         r"a sweep needs 48 MiB there \(SALIQ_MIN_FREE_MB sets it\); the sweep "
                         r"stops: once that is fixed, `saliq sweep resume full-disk` finishes it",
                         text)
        assert stop, text[-3000:]
        assert Path(stop.group(1)).is_relative_to(disk) and int(stop.group(2)) < 48
        before = {r.data.tags["saliq.trial_id"] for r in runs_of(client, "full-disk")
                  if r.info.status == "FINISHED"}
        assert len(before) < TRIALS, "the disk filled after the sweep had finished"

        ballast.unlink()
        done = saliq("sweep", "resume", "full-disk", "--storage", str(disk / "runs"), env=env,
                     timeout=900, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        children = runs_of(client, "full-disk")
        assert len(children) == TRIALS
        assert len({r.data.tags["saliq.trial_id"] for r in children}) == TRIALS
        for run in children:
            assert run.info.status == "FINISHED", run.data.tags
            assert steps(client, run.info.run_id) == list(range(1, EPOCHS + 2))
        parents = runs_of(client, "full-disk", "sweep")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
