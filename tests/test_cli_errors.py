"""Bad input at the CLI, fuzzed: malformed and hostile trial configs and sweep specs always
give one line `saliq: ...` on stderr, exit code 2, no traceback, and no file outside the
chosen output directory. A tracking URI's password is never printed."""

from __future__ import annotations

import json
import os
import re
import string
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import saliq as run_cli

import saliq.trial
from saliq.cli import main

VALID_TRIAL = {
    "dataset": "fashion-mnist", "limit": {"train": 100, "test": 50}, "model": "seed-cnn",
    "precision": {"default": {"weight_bits": 4, "act_bits": 4},
                  "layers": {"fc2": {"weight_bits": 8}}},
    "pact": {"alpha_init": 10.0, "alpha_decay": 0.0002}, "fp": {"epochs": 1, "lr": 0.001},
    "qat": {"epochs": 1, "lr": 0.0005}, "batch_size": 64, "seed": 0,
    "saliency": {"method": "saliency", "probe_size": 16}, "device": "cpu",
}
VALID_SPEC = {
    "name": "fuzz", "trial": {"dataset": "fashion-mnist", "limit": {"train": 100}},
    "search": {"precision.default.weight_bits": {"choice": [2, 4, 8]},
               "pact.alpha_init": {"uniform": [2.0, 12.0]}},
    "objective": {"weighted": {"accuracy": 0.5, "fidelity": 0.5}},
    "sampler": {"type": "tpe", "seed": 0}, "budget": {"num_samples": 4, "max_concurrent": 2},
}

hostile_text = st.one_of(
    st.text(min_size=0, max_size=30),
    st.sampled_from(["../../etc/passwd", "/tmp/../../x", "..", "a/b", "名前", "\x00", "☃" * 80,
                     "fashion-mnist\n", "$(rm -rf /)", "%s%s%n", "NaN", "1e309"]),
)
hostile_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), hostile_text,
)
hostile_value = st.recursive(
    hostile_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(hostile_text, inner, max_size=3)),
    max_leaves=6,
)


def _paths(data: dict, prefix=()) -> list[tuple]:
    out = []
    for key, value in data.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += _paths(value, (*prefix, key))
    return out


@st.composite
def mutated(draw, base: dict):
    """`base` with a few leaves replaced, keys added or removed: mostly invalid."""
    data = yaml.safe_load(yaml.safe_dump(base))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths)) if paths else ("x",)
        node = data
        for key in path[:-1]:
            node = node[key] if isinstance(node.get(key), dict) else node.setdefault(key, {})
        action = draw(st.sampled_from(["replace", "replace", "add", "delete"]))
        if action == "replace":
            node[path[-1]] = draw(hostile_value)
        elif action == "add":
            node[draw(hostile_text)] = draw(hostile_value)
        else:
            node.pop(path[-1], None)
    return data


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_line_error(capsys, code) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("saliq: "), err
    return lines[0]


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(config=mutated(VALID_TRIAL))
def test_fuzzed_trial_configs(config, tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(saliq.trial, "run_trial", lambda c, **kw: ran.append(c) or
                        saliq.trial.TrialResult(c, {"accuracy": 1.0}))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"t{len(os.listdir(tmp_path))}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    before = _tree(tmp_path)
    code = main(["trial", "--config", str(path), "--out", str(tmp_path / "out")])
    if ran:  # the mutation happened to be valid: the trial was handed a validated config
        assert code == 0
        capsys.readouterr()
        return
    _one_line_error(capsys, code)
    assert _tree(tmp_path) == before  # nothing written, not even the output directory


@FUZZ
@given(spec=mutated(VALID_SPEC))
def test_fuzzed_sweep_specs(spec, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"s{len(os.listdir(tmp_path))}.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    before = _tree(tmp_path)
    code = main(["sweep", "validate", str(path)])
    if code == 0:
        capsys.readouterr()
        return
    _one_line_error(capsys, code)
    assert _tree(tmp_path) == before


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200))
def test_random_bytes_as_config(blob, tmp_path, capsys):
    path = tmp_path / "blob.yaml"
    path.write_bytes(blob)
    code = main(["trial", "--config", str(path), "--out", str(tmp_path / "out")])
    if code != 2:  # some byte strings are valid YAML mappings of valid configs: skip those
        capsys.readouterr()
        return
    _one_line_error(capsys, code)


@pytest.mark.parametrize("spec_change, expected", [
    ({"search": {"precision.default.act_bits": {"choice": [2, 64]}}},
     "sweep.search['precision.default.act_bits']: 64 is not a bit-width (use 1-8 or 32)"),
    ({"search": {"precision.default.act_bits": {"choice": []}}}, "non-empty list"),
    ({"search": {"qat.lrr": {"uniform": [0.1, 0.2]}}}, "no such setting"),
    ({"search": {"fp.lr": {"uniform": [0.1, 0.2]}}}, "choice list"),
    ({"budget": {"num_samples": -3}}, "sweep.budget.num_samples"),
    ({"trial": {"dataset": "imagenet"}}, "sweep.trial.dataset: unknown dataset 'imagenet'"),
    ({"name": "../../etc"}, "sweep.name"),
    ({"objective": {"weighted": {"acuracy": 1.0}}}, "unknown metric 'acuracy'"),
    ({"sampler": {"type": "grid"}}, "choice list"),
    ({"resources": {"gpu": -1}}, "sweep.resources.gpu"),
    ({"resources": {"gpu": 1.5}}, "sweep.resources.gpu: 1.5 GPUs per trial: above 1 a GPU "
                                  "count must be whole"),
    ({"trial": {"dataset": "fashion-mnist", "device": "cuda"}},
     "sweep.trial.device: cuda needs resources.gpu > 0 (Ray hides the GPUs from trials that "
     "ask for none)"),
    ({"scheduler": {"type": "asha"}, "objective": {"pareto": {"accuracy": "max"}}}, "ASHA"),
    ({"search": {"precision.layers.conv9.act_bits": {"choice": [2]}}}, "no layer 'conv9'"),
    ({"enqueue": [{"precision.default.weight_bits": 3}]}, "sweep.enqueue[0]"),
])
def test_spec_errors_name_the_field(spec_change, expected, tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**VALID_SPEC, **spec_change}))
    line = _one_line_error(capsys, main(["sweep", "validate", str(path)]))
    assert expected in line


@pytest.mark.parametrize("args, expected", [
    (["trial", "--config", "missing.yaml"], "missing.yaml: no such file"),
    (["trial", "--config", "."], "is a directory"),
    (["trial"], "required"),
    (["trial", "--config", "x.yaml", "--entry", "one"], "invalid int value"),
    (["sweep", "resume", "nothing-here"], "no sweep 'nothing-here'"),
    (["pareto", "export", "--experiment", "x", "--out", "f.yaml", "--objectives", "acc"],
     "METRIC:max"),
    (["pareto", "export", "--experiment", "x", "--out", "f.yaml", "--tolerance", "-0.5"],
     "--tolerance -0.5: give a number >= 0 (0.01 = 1 point of accuracy or of retained "
     "fidelity)"),
    (["pareto", "export", "--experiment", "x", "--out", "f.yaml", "--tolerance", "nan"],
     "--tolerance nan: give a number >= 0"),
    (["sensitivity", "--config", "missing.yaml", "--out", "o"], "no such file"),
    (["bogus"], "invalid choice"),
])
def test_cli_usage_errors(args, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        code = e.code
    assert expected in _one_line_error(capsys, code)


def test_unreachable_tracking_server_fails_before_anything_is_written(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**VALID_SPEC, "storage": str(tmp_path / "runs")}))
    done = run_cli("sweep", "run", str(spec), "--tracking-uri",
                 "http://alice:s3cr3t-pw@127.0.0.1:9", cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "unreachable" in done.stderr and "s3cr3t-pw" not in done.stderr + done.stdout
    assert "alice:***@127.0.0.1:9" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_trials_no_node_can_run_fail_before_anything_is_left_behind(tmp_path, monkeypatch):
    # Ray would queue them forever: the local Ray's resources are known once it has started
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**VALID_SPEC, "storage": str(tmp_path / "runs"),
                                    "resources": {"cpu": 1, "gpu": 64}}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the local store, under runs/
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    done = run_cli("sweep", "run", str(spec), cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"saliq: resources: a trial asks for 1 CPU and 64 GPU, more than this machine's local "
        r"Ray has \(\d+ CPU, \d+ GPU\): lower resources.cpu / resources.gpu in the sweep "
        r"spec, or run the sweep on a cluster that has them \(--address\)", lines[0]), lines
    assert not (tmp_path / "runs").exists()


def test_a_cluster_without_a_node_for_a_trial_is_warned_about_not_refused(monkeypatch, caplog):
    # an autoscaler may still add the node the trials wait for
    import ray

    from saliq.sweep.connection import ResourcesUnavailable, check_resources
    from saliq.sweep.spec import ResourcesSpec

    nodes = [{"Alive": True, "Resources": {"CPU": 8.0}},
             {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}]  # a dead node: no use
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    wanted = ResourcesSpec(cpu=2, gpu=0.5)
    check_resources(wanted, local=False)
    assert "no node of the Ray cluster has 2 CPU and 0.5 GPU for a trial (nodes: 8 CPU, 0 GPU)" \
        in caplog.text
    with pytest.raises(ResourcesUnavailable, match="more than this machine's local Ray has"):
        check_resources(wanted, local=True)
    caplog.clear()
    nodes[1]["Alive"] = True
    check_resources(wanted, local=True)  # fits on the GPU node
    assert caplog.text == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the device")
def test_a_device_this_machine_lacks_is_one_line(tmp_path, capsys):
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump({**VALID_TRIAL, "device": "cuda"}))
    line = _one_line_error(capsys, main(["trial", "--config", str(path),
                                         "--out", str(tmp_path / "out")]))
    assert line == ("saliq: device: cuda, but this process sees no CUDA device: use device: "
                    "auto (the GPU where there is one, else the CPU) or cpu")
    assert not (tmp_path / "out").exists()


def _cifar_spec(tmp_path: Path) -> Path:
    """A sweep of CIFAR-10, which no offline source here has (its own empty data folders)."""
    (tmp_path / "no-data").mkdir()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        **VALID_SPEC, "storage": str(tmp_path / "runs"),
        "trial": {"dataset": "cifar10", "data_root": str(tmp_path / "no-data"),
                  "limit": {"train": 100, "test": 50}, "device": "cpu"}}))
    return spec


def test_a_missing_dataset_stops_a_local_sweep_before_anything_is_written(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SALIQ_DATA_DIR", str(tmp_path / "no-downloads"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    line = _one_line_error(capsys, main(["sweep", "run", str(_cifar_spec(tmp_path))]))
    assert line.startswith(f"saliq: dataset cifar10 not found (looked in --data-root "
                           f"{tmp_path / 'no-data'} too): pass --data-root DIR")
    assert line.endswith("(a sweep spec gives --data-root as trial.data_root)")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_dataset_missing_on_the_workers_fails_the_sweep_in_one_line(tmp_path, monkeypatch):
    # On a cluster saliq cannot see the nodes' disks: the FP reference's task finds out there
    import ray

    from saliq import tracking
    from saliq.errors import DataNotFound
    from saliq.sweep.lifecycle import run_sweep
    from saliq.sweep.spec import load_sweep
    from saliq.tracking import runs
    from saliq.tracking import uri as tracking_uri

    monkeypatch.setenv("SALIQ_DATA_DIR", str(tmp_path / "no-downloads"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"SALIQ_DATA_DIR": str(tmp_path / "no-downloads")}})
    try:  # a Ray that saliq did not start: it cannot tell where the trials will run
        with pytest.raises(DataNotFound) as failed:
            run_sweep(load_sweep(_cifar_spec(tmp_path)))
    finally:
        ray.shutdown()
    message = str(failed.value)
    assert message.startswith("FP reference ") and "dataset cifar10 not found" in message
    assert message.endswith("(a sweep spec gives --data-root as trial.data_root); once fixed, "
                            "`saliq sweep resume fuzz` trains it again")
    client = runs.make_client(tracking_uri.default_store(tmp_path / "runs"))
    [parent] = client.search_runs([client.get_experiment_by_name("fuzz").experiment_id])
    assert parent.info.status == "FAILED"
    assert "dataset cifar10 not found" in parent.data.tags[tracking.TAG_REASON]


@pytest.mark.parametrize("address", ["127.0.0.1:9", "ray://127.0.0.1:9"])
def test_unreachable_ray_cluster_fails_in_seconds_before_anything_is_written(
        address, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**VALID_SPEC, "storage": str(tmp_path / "runs")}))
    line = _one_line_error(capsys, main(["sweep", "run", str(spec), "--address", address]))
    assert line == (f"saliq: cannot reach the Ray cluster at {address} (Connection refused): "
                    "check --address / RAY_ADDRESS and that `ray status` works there")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("uri, expected", [
    ("postgresql://mlflow:s3cr3t-pw@127.0.0.1:9/mlflow",
     "saliq: tracking database postgresql://mlflow:***@127.0.0.1:9/mlflow is unreachable "
     "(Connection refused): start it, or fix mlflow.tracking_uri / --tracking-uri"),
    ("postgresql+pg8000://mlflow:s3cr3t-pw@127.0.0.1/mlflow",
     "saliq: tracking URI postgresql+pg8000://mlflow:***@127.0.0.1/mlflow: its database driver "
     "pg8000 is not installed (No module named 'pg8000'): install it (PostgreSQL: pip install "
     "'psycopg[binary]'), or log to an MLflow server (http://...)"),
])
def test_database_tracking_uris_are_checked_before_anything_is_written(
        uri, expected, tmp_path, capsys):
    # postgresql:// works as it is: SQLAlchemy's default driver for it (psycopg 3) is installed
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**VALID_SPEC, "storage": str(tmp_path / "runs")}))
    assert _one_line_error(capsys, main(["sweep", "run", str(spec), "--tracking-uri", uri])
                           ) == expected
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("url, expected", [
    ("postgresql://optuna@127.0.0.1:9/optuna",
     "saliq: optuna.storage postgresql://optuna@127.0.0.1:9/optuna is unreachable (connection "
     "failed: connection to server at \"127.0.0.1\", port 9 failed: Connection refused): start "
     "the database, or fix optuna.storage"),
    ("postgresql+pg8000://optuna@127.0.0.1/optuna",
     "saliq: optuna.storage postgresql+pg8000://optuna@127.0.0.1/optuna: its database driver "
     "pg8000 is not installed (No module named 'pg8000'): install it (PostgreSQL: pip install "
     "'psycopg[binary]'), or leave optuna.storage out (a journal file beside the sweep)"),
    ("sqlite:////nonexistent-folder/study.db",
     "saliq: optuna.storage sqlite:////nonexistent-folder/study.db: the folder "
     "/nonexistent-folder does not exist: create it, or fix optuna.storage"),
])
def test_the_study_storage_is_checked_before_anything_is_written(url, expected, tmp_path,
                                                                 capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**VALID_SPEC, "storage": str(tmp_path / "runs"),
                                    "optuna": {"storage": url}}))
    for command in (["sweep", "run", str(spec)], ["sweep", "resume", str(spec)]):
        if command[1] == "resume":  # a sweep whose spec.yaml names that storage
            (tmp_path / "runs" / "fuzz").mkdir(parents=True)
            (tmp_path / "runs" / "fuzz" / "spec.yaml").write_text(spec.read_text())
            (tmp_path / "runs" / "fuzz" / "sweep.json").write_text(json.dumps(
                {"sweep_id": "fuzz-1", "experiment": "fuzz",
                 "tracking_uri": f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"}))
        before = _tree(tmp_path)
        assert _one_line_error(capsys, main(command)) == expected
        assert _tree(tmp_path) == before
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_a_store_uri_is_opened_with_mlflow_ui_and_a_server_url_directly(tmp_path):
    from saliq.sweep.lifecycle import SweepOutcome
    from saliq.sweep.terminal import describe

    def ui_line(uri: str) -> str:
        outcome = SweepOutcome("s", "s-1", "s", "3", uri, "/r/s/optuna.journal", 1, 0, None, 1.0)
        return next(line for line in describe(outcome, tmp_path / "s")
                    if line.startswith("open the MLflow UI"))

    page = "#/experiments/3?workflowType=machine_learning"
    assert ui_line("postgresql://u:pw@db:5432/mlflow") == (
        "open the MLflow UI:  mlflow ui --backend-store-uri postgresql://u:***@db:5432/mlflow "
        f"--host 127.0.0.1 --port 5000   then http://127.0.0.1:5000/{page}")
    assert ui_line("http://u:pw@mlflow:5000/") == f"open the MLflow UI:  http://u:***@mlflow:5000/{page}"


def test_a_sweep_no_trial_finished_says_why_there_is_no_frontier_and_no_view(tmp_path):
    from saliq.sweep.lifecycle import SweepOutcome
    from saliq.sweep.terminal import describe

    journal = str(tmp_path / "s" / "optuna.journal")
    outcome = SweepOutcome("s", "s-1", "s", "3", "sqlite:///x.db", journal, 0, 4, None, 1.0)
    assert describe(outcome, tmp_path / "s")[1] == (
        "no Pareto frontier and no analysis views: no trial finished (each run says why in its "
        "saliq.failure_reason tag)")


def test_a_sweep_has_one_driver_at_a_time(tmp_path, capsys, monkeypatch):
    # a second driver (a resume of a sweep that still runs, or a --restart of it) would
    # sample and log its trials twice; a driver killed by SIGKILL blocks nothing
    import signal
    import subprocess
    import sys

    from saliq.sweep.lifecycle import driver_lock

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**VALID_SPEC, "storage": str(tmp_path / "runs")}))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path\n"
         "from saliq.sweep.lifecycle import driver_lock\n"
         "with driver_lock(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(600)",
         str(tmp_path / "runs" / "fuzz")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        line = _one_line_error(capsys, main(["sweep", "run", str(spec), "--restart"]))
        assert line == (f"saliq: sweep 'fuzz' is running (its driver is process {holder.pid}): "
                        "let it finish, or stop it, before running or resuming it again")
        assert not (tmp_path / "runs" / "fuzz").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with driver_lock(tmp_path / "runs" / "fuzz"):  # the dead driver's lock went with it
        pass


def test_file_store_is_refused(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**VALID_SPEC, "storage": str(tmp_path / "runs")}))
    line = _one_line_error(capsys, main(["sweep", "run", str(spec), "--tracking-uri",
                                         str(tmp_path / "mlruns")]))
    assert "no file store" in line
    assert not (tmp_path / "runs").exists()


def test_redact_hides_passwords_only():
    from saliq.tracking.uri import redact

    assert redact("http://u:p4ss@host:5000/x") == "http://u:***@host:5000/x"
    assert redact("postgresql://u:p@db/mlflow") == "postgresql://u:***@db/mlflow"
    assert redact("http://host:5000") == "http://host:5000"
    assert all(c not in redact("https://me:" + string.ascii_letters + "@h") for c in ["abcdef"])
