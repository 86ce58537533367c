"""Benchmark results as files: every script's JSON line, kept with where and how it was measured.

    emit(figures)      # in a benchmark script, instead of print(json.dumps(figures))

prints the JSON object as the script's last line on stdout (as before), then writes it to
`benchmarks/results/<script>-<UTC date-time>.json`, wrapped with the machine (CPU model, cores, memory, GPU if
any), the commit (`git rev-parse HEAD`, and whether tracked files differed from it), the command line and the
date. The docs' results page is generated from these files (docs/hooks.py), so figures are never retyped into
prose. `BENCHMARK_RESULTS_DIR` writes them elsewhere (a smoke run that is not a result).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DIR_ENV = "BENCHMARK_RESULTS_DIR"
STAMP = "%Y%m%dT%H%M%SZ"  # in file names: sortable, no colons


def emit(figures: dict[str, Any], script: str | None = None) -> Path | None:
    """Print `figures` as the last stdout line, then keep them as a result file; its path (None if unwritable)."""
    print(json.dumps(figures), flush=True)
    try:
        path = save(figures, script or Path(sys.argv[0]).stem)
    except OSError as exc:  # the figures are on stdout: say why the file is missing, do not lose the run's exit code
        print(f"result file not written: {exc}", file=sys.stderr)
        return None
    print(f"result: {_shown(path)}", file=sys.stderr)
    return path


def save(
    figures: dict[str, Any],
    script: str,
    directory: Path | None = None,
    argv: list[str] | None = None,
    now: dt.datetime | None = None,
) -> Path:
    """Write one result file (never overwriting one); its path."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    folder = Path(directory or os.environ.get(DIR_ENV) or RESULTS_DIR)
    record = {
        "benchmark": script,
        "date": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "command": command_line(sys.argv if argv is None else argv),
        "commit": commit(),
        "machine": machine(),
        "result": figures,
    }
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{script}-{now.strftime(STAMP)}"
    for n in range(100):
        path = folder / (f"{stem}.json" if n == 0 else f"{stem}-{n}.json")
        try:
            with path.open("x", encoding="utf-8") as out:  # exclusive: two runs in one second keep both
                out.write(json.dumps(record, indent=2) + "\n")
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder / stem}.json and 99 more")


def command_line(argv: list[str]) -> str:
    """The command as one would type it again from the repository root."""
    if not argv:
        return "python"
    script = Path(argv[0])
    with_root = script.resolve()
    shown = str(with_root.relative_to(ROOT)) if with_root.is_relative_to(ROOT) else str(script)
    return shlex.join(["python", shown, *argv[1:]])


def commit() -> dict[str, Any]:
    """HEAD and whether tracked files differ from it (untracked files, such as earlier results, do not count)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if head else None
    return {"hash": head, "dirty": None if status is None else bool(status)}


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and GPUs of this machine, read without importing torch."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": _gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[str]:
    """NVIDIA GPUs as nvidia-smi names them (name and memory); none without the tool."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def load(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every result file in `directory`, newest first; each record gains `file` (its name)."""
    folder = Path(directory or RESULTS_DIR)
    records = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        record["file"] = path.name
        records.append(record)
    return sorted(records, key=lambda r: str(r.get("date", "")), reverse=True)


def _shown(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)
