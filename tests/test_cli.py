"""The command line: flags are documented, mistakes are one line and exit 2, the search runs on a real cluster."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from tunevision.cli import main, parser

FLAGS = ["--trials", "--max-epochs", "--cpus-per-trial", "--gpus-per-trial", "--max-concurrent", "--address",
         "--tracking-uri", "--storage", "--seed", "--data", "--name", "--resume", "--cpu-fallback",
         "--resource-wait"]


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


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
RAY_IMPORTING_SEARCH = '''
from ray import tune
import tunevision
search = tunevision.Search(name="loopback", data=tunevision.ImageFolder("{root}"),
                           space={{"backbone": "cnn", "weights": None, "image_size": 24, "lr": tune.loguniform(1e-3, 1e-2)}},
                           trials=1, max_epochs=1)
'''


def _listening(root: psutil.Process) -> dict[int, tuple[str, set[str], str | None]]:
    """Every process below `root` with a listening TCP socket: pid -> (command line, addresses, RAY_AUTH_MODE)."""
    seen = {}
    for proc in root.children(recursive=True):
        try:
            addresses = {c.laddr.ip for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}
            if addresses:
                seen[proc.pid] = (" ".join(proc.cmdline()), addresses, proc.environ().get("RAY_AUTH_MODE"))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return seen


@pytest.mark.slow
def test_search_without_address_keeps_every_ray_port_on_loopback_with_token_auth(tmp_path, pattern_folder):
    path = tmp_path / "loopback.py"
    path.write_text(RAY_IMPORTING_SEARCH.format(root=pattern_folder))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS", "RAY_AUTH_MODE")}  # as a user's shell
    env["TUNEVISION_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunevision.cli", "search", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
         "--storage", str(tmp_path / "ray")], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    seen: dict[int, tuple[str, set[str], str | None]] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:  # the whole run: Ray's start, the trial's worker, the end
        for pid, (command, addresses, auth) in _listening(root).items():
            seen[pid] = (command, seen.get(pid, ("", set(), None))[1] | addresses, auth)
        time.sleep(0.2)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out[-3000:]
    commands = " ".join(command for command, _, _ in seen.values())
    assert "gcs_server" in commands and "raylet" in commands and "ImplicitFunc" in commands, commands  # the trial's worker
    outward = {command.split()[0]: sorted(a - LOOPBACK) for command, a, _ in seen.values() if a - LOOPBACK}
    assert not outward, f"Ray processes listening beyond loopback: {outward}"
    assert {auth for command, _, auth in seen.values() if "gcs_server" in command or "raylet" in command} == {"token"}
