"""A real multi-node Ray cluster on one machine: each node in its own network namespace, joined by veth pairs.

Ray binds to the machine's outward address even when told 127.0.0.1, so a head and workers that must
talk only among themselves live in namespaces the test creates (10.213.0.0/24) with token auth on.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.213.0"
PORT = 6379


def can_make_namespaces() -> bool:
    """True where this process may create network namespaces (root with iproute2)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class NetnsCluster:
    """Head in the first namespace, workers in the others; the driver runs in the head's namespace."""

    prefix: str
    temp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tvr", dir="/tmp")))  # short: Ray's socket paths have a length limit
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    nodes: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{SUBNET}.1:{PORT}"

    def env(self) -> dict[str, str]:
        """Environment for every node and the driver: the same auth token everywhere."""
        env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        env.pop("RAY_ADDRESS", None)
        return env

    def _namespace(self, index: int) -> str:
        name = f"{self.prefix}{index}"
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
        if index > 0:  # veth pair head <-> this node, through a bridge in the head's namespace
            head = f"{self.prefix}0"
            a, b = f"{self.prefix}h{index}", f"{self.prefix}n{index}"
            _ip("link", "add", a, "type", "veth", "peer", "name", b)
            _ip("link", "set", a, "netns", head)
            _ip("link", "set", b, "netns", name)
            _ip("-n", head, "link", "set", a, "master", f"{self.prefix}br")
            _ip("-n", head, "link", "set", a, "up")
            _ip("-n", name, "addr", "add", f"{SUBNET}.{index + 1}/24", "dev", b)
            _ip("-n", name, "link", "set", b, "up")
        else:
            _ip("-n", name, "link", "add", f"{self.prefix}br", "type", "bridge")
            _ip("-n", name, "addr", "add", f"{SUBNET}.1/24", "dev", f"{self.prefix}br")
            _ip("-n", name, "link", "set", f"{self.prefix}br", "up")
        self.nodes.append(name)
        return name

    def _ray_start(self, index: int, *args: str) -> None:
        name = self._namespace(index)
        ray = str(Path(sys.executable).with_name("ray"))
        command = ["ip", "netns", "exec", name, ray, "start", "--node-ip-address", f"{SUBNET}.{index + 1}",
                   "--disable-usage-stats", "--temp-dir", str(self.temp / name), *args]
        result = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"ray start in {name} failed: {result.stderr[-2000:]}")

    def start(self, workers: int, cpus: int = 1, gpus: int = 0) -> None:
        """Start the head (no trial resources of its own beyond `cpus`) and `workers` worker nodes."""
        self._ray_start(0, "--head", "--port", str(PORT), "--num-cpus", str(cpus), "--num-gpus", "0",
                        "--include-dashboard", "false")
        for i in range(1, workers + 1):
            self._ray_start(i, "--address", self.address, "--num-cpus", str(cpus), "--num-gpus", str(gpus))

    def pids(self, node: str) -> list[int]:
        """Process ids of every process in one node's namespace (that node's own Ray processes)."""
        out = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill_node(self, node: str) -> None:
        """Kill one node's Ray processes by pid, as a lost machine would vanish."""
        for pid in self.pids(node):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def driver(self, argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        """Run a command in the head's namespace with the cluster's token."""
        return subprocess.run(["ip", "netns", "exec", self.nodes[0], *argv], cwd=cwd, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        """Kill every node and remove the namespaces."""
        for node in reversed(self.nodes):
            self.kill_node(node)
        time.sleep(0.5)
        for node in reversed(self.nodes):
            subprocess.run(["ip", "netns", "del", node], capture_output=True)
        self.nodes.clear()
        shutil.rmtree(self.temp, ignore_errors=True)
