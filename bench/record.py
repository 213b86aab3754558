"""What every benchmark writes beside its figures: the machine, and the append to bench/RESULTS.md."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """CPU model, cores, GPU and library versions, in one line."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, {platform.python_implementation()} {platform.python_version()}"


def header(title: str, command: str, machine_note: str, data: str) -> list[str]:
    """The first lines of a benchmark's section: its title, then date, machine, command and data."""
    import time

    return [f"## {title}", "", f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}", f"- machine: {machine()}; {machine_note}",
            f"- command: `{command}`", f"- data: {data}", ""]


def publish(results: Path, lines: list[str]) -> None:
    """Print a benchmark's section and append it to `results`."""
    text = "\n".join(lines) + "\n"
    print(text)
    append(results, text)


def append(results: Path, text: str) -> None:
    """Append a benchmark's section to `results`, starting the file if no benchmark has yet."""
    results.parent.mkdir(parents=True, exist_ok=True)
    heading = "\n" if results.exists() else "# Benchmark results\n\n"
    with open(results, "a") as out:
        out.write(heading + text)
