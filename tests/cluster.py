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
    fast_health_check: bool = False  # the head notices a killed node within seconds, not ~30 s
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
        if self.fast_health_check:  # RayConfig entries (ray_config_def.h): the GCS probes each raylet every second
            env.update(RAY_health_check_initial_delay_ms="1000", RAY_health_check_period_ms="1000",
                       RAY_health_check_timeout_ms="3000", RAY_health_check_failure_threshold="4")
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

    def start(self, workers: int, cpus: int = 1, gpus: int = 0, head_cpus: int | None = None, head_gpus: int = 0) -> None:
        """Start the head (`head_cpus`, default `cpus`, and `head_gpus`) and `workers` worker nodes of `cpus` and `gpus`."""
        self._ray_start(0, "--head", "--port", str(PORT), "--num-cpus", str(cpus if head_cpus is None else head_cpus),
                        "--num-gpus", str(head_gpus), "--include-dashboard", "false")
        for _ in range(workers):
            self.add_worker(cpus, gpus)

    def add_worker(self, cpus: int = 1, gpus: int = 0) -> str:
        """Start one more worker node of `cpus` and `gpus`, also while a search runs; return its namespace."""
        self._ray_start(len(self.nodes), "--address", self.address, "--num-cpus", str(cpus), "--num-gpus", str(gpus))
        return self.nodes[-1]

    def ip(self, node: str) -> str:
        """The address of one node (its namespace name)."""
        return f"{SUBNET}.{self.nodes.index(node) + 1}"

    def node(self, ip: str) -> str:
        """The namespace of the node at `ip`."""
        return self.nodes[int(ip.rsplit(".", 1)[1]) - 1]

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

    def start_driver(self, argv: list[str], cwd: Path, log: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a command in the head's namespace without waiting; stdout and stderr go to `log`."""
        with open(log, "w") as out:
            return subprocess.Popen(["ip", "netns", "exec", self.nodes[0], *argv], cwd=cwd, env=self.env() | (env_extra or {}),
                                    stdout=out, stderr=subprocess.STDOUT, text=True)

    def wait_node_dead(self, node: str, timeout: float) -> float:
        """Wait until the head's GCS marks `node` dead; return the seconds that took (raise on timeout)."""
        started = time.monotonic()
        script = (
            "import sys, time, ray\n"
            f"ray.init(address={self.address!r}, log_to_driver=False, logging_level='ERROR')\n"
            f"deadline = time.monotonic() + {timeout}\n"
            "while time.monotonic() < deadline:\n"
            f"    if not any(n['Alive'] for n in ray.nodes() if n['NodeManagerAddress'] == {self.ip(node)!r}):\n"
            "        sys.exit(0)\n"
            "    time.sleep(0.2)\n"
            "sys.exit(1)\n"
        )
        result = self.driver([sys.executable, "-c", script], cwd=self.temp, timeout=timeout + 60)
        if result.returncode != 0:
            raise TimeoutError(f"Ray did not mark {node} ({self.ip(node)}) dead within {timeout:g} s: {result.stderr[-1000:]}")
        return time.monotonic() - started

    def stop(self) -> None:
        """Kill every node and remove the namespaces."""
        for node in reversed(self.nodes):
            self.kill_node(node)
        time.sleep(0.5)
        for node in reversed(self.nodes):
            subprocess.run(["ip", "netns", "del", node], capture_output=True)
        self.nodes.clear()
        shutil.rmtree(self.temp, ignore_errors=True)
