"""The command line: flags are documented, mistakes are one line and exit 2, the search runs on a real cluster."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tunevision.cli import main, parser

FLAGS = ["--trials", "--max-epochs", "--cpus-per-trial", "--gpus-per-trial", "--max-concurrent", "--address",
         "--tracking-uri", "--storage", "--seed", "--data", "--name", "--resume", "--cpu-fallback"]


def test_search_help_documents_every_flag():
    text = parser()._subparsers._group_actions[0].choices["search"].format_help()
    for flag in FLAGS:
        assert flag in text


@pytest.mark.parametrize(
    "content, reason",
    [
        ("search = (\n", "syntax error"),
        ("x = 1\n", "defines no `search`"),
        ("import tunevision\nsearch = tunevision.Search(name='x', data=tunevision.Digits(), colour='red')\n", "unknown option 'colour'"),
        ("import tunevision\nsearch = tunevision.Search(name='x', data=tunevision.Digits(), space={'lrate': 1})\n", "unknown key"),
    ],
)
def test_bad_search_file_exits_2_with_at_most_three_lines_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.py"
    path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "tunevision.cli", "search", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3 and str(path) in lines[0] and reason in result.stderr
    assert "Traceback" not in result.stderr


def test_data_flag_on_a_source_without_root_is_refused(tmp_path, capsys):
    path = tmp_path / "d.py"
    path.write_text("import tunevision\nsearch = tunevision.Search(name='d', data=tunevision.Digits())\n")
    assert main(["check", str(path), "--data", str(tmp_path)]) == 2
    assert "--data: Digits has no root path" in capsys.readouterr().err


def test_backbones_lists_registered_names(capsys):
    assert main(["backbones", "resnet*"]) == 0
    names = capsys.readouterr().out.split()
    assert "resnet18" in names and "resnet50" in names and all(n.startswith("resnet") for n in names)


def test_predict_names_a_missing_image(tmp_path, capsys):
    assert main(["predict", "models:/nothing/1", str(tmp_path / "none.png")]) == 2
    assert "none.png: no such image file" in capsys.readouterr().err


def test_search_offline_without_weights_stops_before_ray_naming_the_file(tmp_path, monkeypatch, capsys):
    import time

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TUNEVISION_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r.py"
    path.write_text("import tunevision\nsearch = tunevision.Search(name='r', data=tunevision.Digits(), space={'backbone': 'resnet18'})\n")
    started = time.monotonic()
    assert main(["search", str(path)]) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "resnet18-f37072fd.pth" in err and str(tmp_path / "torch") in err and "efficientnet_lite0" in err
    assert not (tmp_path / "mlflow.db").exists()  # stopped before any run was opened
