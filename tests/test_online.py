"""The download-host and tracking-server probes answer within their timeouts, whatever is (not) at the other end."""
from __future__ import annotations

import time

import pytest

from tunevision.online import reachable


def test_unresolvable_host_is_unreachable_within_the_timeout(monkeypatch):
    monkeypatch.delenv("TUNEVISION_OFFLINE", raising=False)
    started = time.monotonic()
    assert reachable.__wrapped__("host.invalid", timeout=1.0) is False
    assert time.monotonic() - started < 2.5


def test_offline_setting_answers_false_without_probing(monkeypatch):
    monkeypatch.setenv("TUNEVISION_OFFLINE", "1")
    started = time.monotonic()
    assert reachable.__wrapped__("download.pytorch.org") is False
    assert time.monotonic() - started < 0.1


def test_a_connect_that_hangs_is_abandoned_after_the_timeout(monkeypatch):
    import tunevision.online as online

    monkeypatch.delenv("TUNEVISION_OFFLINE", raising=False)
    def hang(*args, **kwargs):
        time.sleep(3)
        raise OSError("timed out")

    monkeypatch.setattr(online.socket, "create_connection", hang)
    started = time.monotonic()
    assert reachable.__wrapped__("unanswering.invalid", timeout=0.3) is False
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("server", ["refused", "silent"])
def test_search_with_no_mlflow_server_at_its_tracking_uri_exits_within_5_seconds_from_a_cold_start(tmp_path, server):
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if server == "silent":
        listener.listen()  # accepts, never answers
    else:
        listener.close()  # nothing listens: refused
    search_file = tmp_path / "any.py"
    search_file.write_text("search = None\n")
    uri = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).with_name("tunevision")), "search", str(search_file), "--tracking-uri", uri],
                            capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    listener.close()
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"tunevision: error: --tracking-uri {uri}: no MLflow tracking server answers there")
    assert len(result.stderr.strip().splitlines()) == 1
    assert elapsed < 5.0, f"{elapsed:.1f} s"
