"""The download-host probe answers within its timeout, offline or not."""
from __future__ import annotations

import time

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
