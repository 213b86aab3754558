"""A two-objective search end to end, and the model it registers served where tunevision cannot be imported.

Optuna multi-objective + ASHA on val_objective, the Pareto front, the point the rule chooses, ensemble
or not, calibration, the FNR threshold; then mlflow.pyfunc.load_model and `mlflow models serve`
in processes that cannot import tunevision.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from fakes import pattern_image, wait_until_answering, write_pattern_images
from tunevision.choose import Rule
from tunevision.cli import main
from tunevision.winner import ensemble_is_better

RULE = "max val_accuracy where val_fnr <= 0.3"
SEARCH = f'''
from ray import tune
import tunevision
search = tunevision.Search(
    name="pareto",
    data=tunevision.ImageFolder("{{root}}"),
    space={{{{"backbone": "cnn", "image_size": 24, "batch_size": 16, "lr": tune.loguniform(1e-3, 1e-2)}}}},
    metric=("val_accuracy", "val_fnr"),
    mode=("max", "min"),
    choose="{RULE}",
    fnr_target=0.2,
    positive_class="dog",
    ensemble=2,
    trials=3,
    max_epochs=2,
    patience=1,
)
'''
# Put first on a child process's sys.path (as sitecustomize), it makes `import tunevision` fail there.
NO_TUNEVISION = '''
import sys

class NoTunevision:
    def find_spec(self, name, path=None, target=None):
        if name == "tunevision" or name.startswith("tunevision."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None

sys.meta_path.insert(0, NoTunevision())
'''


@pytest.fixture(scope="module")
def searched(tmp_path_factory, ray_session) -> dict:
    """One CLI search of SEARCH on 80 pattern images: its folder, tracking URI, printed summary and model URI."""
    folder = tmp_path_factory.mktemp("pareto")
    root = write_pattern_images(folder / "images", per_class=40)
    path = folder / "pareto.py"
    path.write_text(SEARCH.format(root=root))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("TUNEVISION_CACHE", str(folder / "cache"))
        code = main(["search", str(path), "--tracking-uri", uri, "--storage", str(folder / "ray")])
    assert code == 0, out.getvalue()[-3000:]
    hide = folder / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(NO_TUNEVISION)
    return {"folder": folder, "root": root, "uri": uri, "out": out.getvalue(), "hide": hide, "model_uri": "models:/pareto/1"}


@pytest.mark.slow
def test_two_objective_search_logs_its_front_follows_the_rule_and_registers_a_calibrated_model_at_the_fnr_threshold(searched):
    import mlflow.pyfunc

    from tunevision.predict import predict_files

    assert f"choose: {RULE}" in searched["out"] and "operating point: temperature" in searched["out"]
    assert "test (once, chosen model): test_accuracy=" in searched["out"]
    client = MlflowClient(searched["uri"])
    runs = client.search_runs([client.get_experiment_by_name("pareto").experiment_id])
    parent = next(r for r in runs if r.data.tags["tunevision.role"] == "search")
    trials = [r for r in runs if r.data.tags["tunevision.role"] == "trial"]
    assert len(trials) == 3 and all("val_objective" in t.data.metrics for t in trials)  # what ASHA ranked

    # The Pareto front: every epoch of every trial, the front among the checkpointed ones, one chosen by the rule.
    run_id = parent.info.run_id
    front = pd.read_csv(client.download_artifacts(run_id, "pareto/front.csv"))
    assert len(front) == sum(len(client.get_metric_history(t.info.run_id, "val_accuracy")) for t in trials)
    assert {"pareto/front.csv", "pareto/front.png"} <= {f.path for f in client.list_artifacts(run_id, "pareto")}
    kept = front[front["checkpoint"]]
    rule = Rule.parse(RULE)
    chosen = front[front["chosen"]]
    assert len(chosen) == 1 and chosen.iloc[0]["checkpoint"]
    assert rule.key(chosen.iloc[0].to_dict()) == max(rule.key(row) for row in kept.to_dict("records"))
    assert front.loc[kept.index, "pareto"].any()
    assert parent.data.tags["tunevision.best_trial_id"] == chosen.iloc[0]["trial_id"]

    # Ensemble or not, the search run says which and why; calibration and the threshold are on it too.
    metrics, tags = parent.data.metrics, parent.data.tags
    kind = tags["tunevision.model"]
    single = {m: metrics[f"single_{m}"] for m in rule.metrics()}
    together = {m: metrics[f"ensemble_{m}"] for m in rule.metrics()}
    together["val_loss"], single["val_loss"] = metrics["ensemble_val_loss"], metrics["single_val_loss"]
    assert kind == ("ensemble" if ensemble_is_better(rule, together, single) else "single")
    assert tags["tunevision.model_reason"].startswith("model: ensemble" if kind == "ensemble" else "model: the best trial alone")
    assert Path(client.download_artifacts(run_id, "winner.txt")).read_text().startswith(f"rule: {RULE}\n")
    assert metrics["temperature"] > 0 and 0 <= metrics["val_ece"] <= 1 and 0 <= metrics["val_ece_uncalibrated"] <= 1
    assert metrics["val_fnr_at_threshold"] <= 0.2 and 0 < metrics["threshold"] < 1
    assert {"test_accuracy", "test_fnr", "test_ece", "test_at_0.5_accuracy", "test_at_0.5_fnr"} <= set(metrics)

    # The registered model carries temperature and threshold, and its answers on the test split are the logged figures.
    assert [str(v.version) for v in client.search_model_versions("name='pareto'")] == ["1"]
    model = mlflow.pyfunc.load_model(searched["model_uri"])
    meta = model.metadata.metadata
    assert meta["threshold"] == pytest.approx(metrics["threshold"]) and meta["temperature"] == pytest.approx(metrics["temperature"])
    assert meta["kind"] == kind and len(meta["trial_ids"]) == (2 if kind == "ensemble" else 1)
    manifest = pd.read_csv(client.download_artifacts(run_id, "manifest.csv"))
    test = manifest[manifest["split"] == "test"]
    predicted = [label for _, label, _ in predict_files(model, [searched["root"] / key for key in test["key"]])]
    dogs = [p for p, t in zip(predicted, test["label"]) if t == "dog"]
    assert np.mean([p == t for p, t in zip(predicted, test["label"])]) == pytest.approx(metrics["test_accuracy"])
    assert np.mean([p != "dog" for p in dogs]) == pytest.approx(metrics["test_fnr"])


def known_images(n: int, size: int, seed: int = 7) -> tuple[np.ndarray, list[str]]:
    """Fresh pattern images (not the search's), uint8 N x H x W x 3, alternately cat and dog."""
    rng = np.random.default_rng(seed)
    return np.stack([pattern_image(i % 2, 2, size, rng) for i in range(n)]), [("cat", "dog")[i % 2] for i in range(n)]


def without_tunevision(searched: dict) -> dict[str, str]:
    """The environment of a child process in which `import tunevision` fails (uvicorn on PATH, as in an active venv)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PYTHONPATH": str(searched["hide"]), "MLFLOW_TRACKING_URI": searched["uri"], "PATH": path}


@pytest.mark.slow
def test_registered_model_loads_with_pyfunc_and_predicts_known_classes_where_tunevision_cannot_be_imported(searched, tmp_path):
    images, labels = known_images(8, 24)
    np.save(tmp_path / "images.npy", images)
    code = f"""
import json, sys
import numpy as np
try:
    import tunevision
    sys.exit("tunevision is importable")
except ImportError:
    pass
import mlflow.pyfunc
model = mlflow.pyfunc.load_model({searched["model_uri"]!r})
answer = model.predict(np.load("images.npy"))
print(json.dumps({{"classes": list(answer["class"]), "probabilities": list(answer["probabilities"]),
                   "metadata": model.metadata.metadata}}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=without_tunevision(searched),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["classes"] == labels
    assert all(set(p) == {"cat", "dog"} and abs(sum(p.values()) - 1) < 1e-5 for p in out["probabilities"])
    assert out["metadata"]["classes"] == ["cat", "dog"] and out["metadata"]["image_sizes"] == [24]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_an_invocation_with_class_and_probabilities_without_tunevision(searched, tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", searched["model_uri"],
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            cwd=tmp_path, env=without_tunevision(searched), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/ping", server, log_path, 120, "mlflow models serve")
        images, labels = known_images(4, 40)  # not the trained size: resized inside
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                         data=json.dumps({"inputs": images.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            predictions = json.loads(r.read())["predictions"]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert [p["class"] for p in predictions] == labels
    for p in predictions:
        assert p["probability"] == pytest.approx(p["probabilities"][p["class"]])
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)


def test_fnr_target_and_fnr_metric_need_two_classes_and_say_so_before_any_trial():
    from tunevision import Digits, Search, TunevisionError
    from tunevision.winner import check_operating_point

    classes = [str(i) for i in range(10)]
    with pytest.raises(TunevisionError, match="fnr_target needs two classes, the data has 10"):
        check_operating_point(Search(name="t", data=Digits(), fnr_target=0.1), classes)
    with pytest.raises(TunevisionError, match="metric val_fnr needs two classes"):
        check_operating_point(Search(name="t", data=Digits(), metric="val_fnr", mode="min"), classes)
    check_operating_point(Search(name="t", data=Digits(), fnr_target=0.1), ["a", "b"])


def test_ensemble_wins_a_tie_under_the_rule_only_with_the_lower_validation_log_loss():
    rule = Rule.parse("max val_accuracy where val_fnr <= 0.08")
    single = {"val_accuracy": 0.962, "val_fnr": 0.0, "val_loss": 0.20}
    assert ensemble_is_better(rule, {"val_accuracy": 0.962, "val_fnr": 0.0, "val_loss": 0.15}, single)
    assert not ensemble_is_better(rule, {"val_accuracy": 0.962, "val_fnr": 0.0, "val_loss": 0.25}, single)
    assert not ensemble_is_better(rule, {"val_accuracy": 0.949, "val_fnr": 0.0, "val_loss": 0.05}, single)  # the rule first
    assert not ensemble_is_better(rule, {"val_accuracy": 0.975, "val_fnr": 0.1, "val_loss": 0.05}, single)  # breaks the constraint
