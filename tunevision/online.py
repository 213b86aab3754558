"""Whether a download host or a tracking server answers: asked before any trial, so a search fails fast, never hangs."""
from __future__ import annotations

import functools
import json
import os
import socket
import threading

from tunevision.errors import TunevisionError


@functools.lru_cache(maxsize=None)
def reachable(host: str, timeout: float = 2.0) -> bool:
    """True when `host` accepts a TCP connection on port 443 within `timeout` seconds; False if TUNEVISION_OFFLINE=1."""
    if os.environ.get("TUNEVISION_OFFLINE") == "1":
        return False
    answered: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    # A thread we stop waiting for, because the name lookup before the connect ignores the socket timeout.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


_ANSWERED: set[str] = set()  # tracking URIs an MLflow server answered at


def check_tracking_uri(uri: str | None, timeout: float = 3.0) -> None:
    """Raise one line, within `timeout` seconds, when no MLflow tracking server answers at an http(s) URI.

    MLflow's client retries a refused or silent server with backoff for minutes; a search must stop before
    Ray and any trial start instead. One MLflow REST call (GET experiments/search) is asked with a hard
    deadline: a refused connection, no answer in time, or an answer that is not MLflow's JSON fails. 401/403
    mean a server that wants credentials, which MLflow's client sends. `None` checks MLflow's current URI
    (MLFLOW_TRACKING_URI); other schemes (sqlite, file, databricks...) are left to MLflow.
    """
    import threading
    import urllib.error
    import urllib.parse
    import urllib.request

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https") or uri in _ANSWERED:
        return
    probe = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    context = None  # TLS verified as MLflow's client is told to
    if urllib.parse.urlsplit(uri).scheme == "https":
        import ssl

        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
            context = ssl._create_unverified_context()
        elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            context = ssl.create_default_context(cafile=os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"])
    why: list[str] = []  # stays empty when an MLflow server answered

    def ask() -> None:
        try:
            with urllib.request.urlopen(probe, timeout=timeout, context=context) as response:
                body = response.read(1_000_000)
            if not isinstance(json.loads(body or b"{}"), dict):
                why.append("its answer to an MLflow REST call is not MLflow's JSON")
        except urllib.error.HTTPError as e:
            if e.code not in (401, 403):
                why.append(f"it answered HTTP {e.code} to an MLflow REST call")
        except urllib.error.URLError as e:
            why.append(f"cannot connect: {getattr(e.reason, 'strerror', None) or e.reason}")
        except ValueError:
            why.append("its answer to an MLflow REST call is not MLflow's JSON")
        except Exception as e:  # a closed connection, a reply that is not HTTP, a read timeout...
            why.append(f"no MLflow answer: {str(e) or type(e).__name__}")

    asker = threading.Thread(target=ask, name="tunevision-check-tracking-uri", daemon=True)
    asker.start()
    asker.join(timeout)
    if asker.is_alive():
        why.append(f"no answer within {timeout:g} s")
    if not why:
        _ANSWERED.add(uri)  # the CLI asks first, SearchRun again: one probe per process is enough
        return
    raise TunevisionError(
        f"--tracking-uri {uri}: no MLflow tracking server answers there ({why[0]}); "
        f"start `mlflow server` there or pass another --tracking-uri"
    )
