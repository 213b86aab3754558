"""The registered model serves without tunevision: torch.export program + MLflow pyfunc, loaded and served by MLflow alone."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import pattern_image, write_pattern_images
from tunevision.export import ModelCard, ServedClassifier, export_program

# Put first on sys.path of a child process (as sitecustomize), it makes `import tunevision` fail there.
NO_TUNEVISION = '''
import sys

class NoTunevision:
    def find_spec(self, name, path=None, target=None):
        if name == "tunevision" or name.startswith("tunevision."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None

sys.meta_path.insert(0, NoTunevision())
'''


def known_images(n: int = 8, size: int = 24, seed: int = 7) -> tuple[np.ndarray, list[str]]:
    """Fresh pattern images (not the training ones), uint8 N x H x W x 3, half cat, half dog."""
    rng = np.random.default_rng(seed)
    labels = [("cat", "dog")[i % 2] for i in range(n)]
    return np.stack([pattern_image(i % 2, 2, size, rng) for i in range(n)]), labels


def test_served_program_takes_uint8_images_of_any_size_and_batch_and_returns_the_networks_probabilities(tmp_path):
    import torch.nn.functional as F

    from tunevision.models.network import create_network

    torch.manual_seed(0)
    networks = [create_network({"backbone": "cnn", "image_size": 16}, 3, 3).eval() for _ in range(2)]
    module = ServedClassifier(networks, [16, 20], temperature=2.0)
    program = torch.export.load(str(export_program(module, 3, tmp_path / "m.pt2"))).module()
    for shape in [(1, 31, 17, 3), (4, 16, 16, 3)]:
        images = torch.randint(0, 256, shape, dtype=torch.uint8)
        x = images.permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            expected = torch.stack([torch.softmax(net(F.interpolate(x, size=(s, s), mode="bilinear", antialias=True)), 1)
                                    for net, s in zip(networks, [16, 20])]).mean(0)
            expected = torch.softmax(torch.log(expected) / 2.0, 1)
            probs = program(images)
        assert probs.shape == (shape[0], 3)
        assert torch.allclose(probs, expected, atol=1e-5)


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[str, str, Path]:
    """A small network trained on pattern images, exported and registered as 'patterns' in a fresh MLflow store."""
    import pytorch_lightning as pl

    from tunevision.data import ImageDataModule, ImageFolder, prepare
    from tunevision.export import register
    from tunevision.models.classifier import Classifier
    from tunevision.tracking import SearchRun

    root = tmp_path_factory.mktemp("export")
    os.environ["TUNEVISION_CACHE"] = str(root / "cache")
    pl.seed_everything(0, verbose=False)
    data = prepare(ImageFolder(str(write_pattern_images(root / "images"))), seed=0)
    model = Classifier({"backbone": "cnn", "image_size": 24, "lr": 3e-3, "batch_size": 8}, data.classes, 3, max_epochs=3)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=ImageDataModule(data, model.config, model.network.image_size))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    search_run = SearchRun(uri, "patterns")
    search_run.start(Path(__file__), {})
    card = ModelCard(data.classes, 3, [model.trained_size()], temperature=1.5, threshold=0.4, positive_class="dog",
                     trial_ids=["t1"])
    model_uri = register(search_run, ServedClassifier([model.network], card.image_sizes, card.temperature), card, "patterns")
    search_run.finish()
    hide = root / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(NO_TUNEVISION)
    return model_uri, uri, hide


def without_tunevision(tracking_uri: str, hide: Path) -> dict[str, str]:
    """The environment of a child process in which `import tunevision` fails."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # uvicorn, as in an active venv
    return {**os.environ, "PYTHONPATH": str(hide), "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}


@pytest.mark.slow
def test_registered_model_loads_with_pyfunc_and_predicts_known_classes_where_tunevision_cannot_be_imported(registered, tmp_path):
    model_uri, tracking_uri, hide = registered
    images, labels = known_images()
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
model = mlflow.pyfunc.load_model({model_uri!r})
answer = model.predict(np.load("images.npy"))
print(json.dumps({{"classes": list(answer["class"]), "probabilities": list(answer["probabilities"]),
                   "metadata": model.metadata.metadata, "inputs": model.metadata.signature.inputs.to_dict()}}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=without_tunevision(tracking_uri, hide),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["classes"] == labels
    assert all(abs(sum(p.values()) - 1) < 1e-5 and set(p) == {"cat", "dog"} for p in out["probabilities"])
    meta = out["metadata"]
    assert meta["classes"] == ["cat", "dog"] and meta["image_sizes"] == [24] and meta["threshold"] == 0.4
    assert meta["temperature"] == 1.5 and meta["positive_class"] == "dog" and meta["channels"] == 3
    assert out["inputs"] == [{"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": [-1, -1, -1, 3]}}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_an_invocation_with_class_and_probabilities_without_tunevision(registered, tmp_path):
    model_uri, tracking_uri, hide = registered
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=without_tunevision(tracking_uri, hide), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping within 120 s"
            time.sleep(0.5)
        images, labels = known_images(n=4, size=40)  # not the trained size: resized inside
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                         data=json.dumps({"inputs": images.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            predictions = json.loads(r.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    assert [p["class"] for p in predictions] == labels
    for p in predictions:
        assert p["probability"] == pytest.approx(p["probabilities"][p["class"]])
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
    assert "No module named 'tunevision'" not in (tmp_path / "serve.log").read_text()
