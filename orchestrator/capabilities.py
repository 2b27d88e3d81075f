"""What this machine offers: CPU, memory, disk, GPUs, Docker and Python."""

from __future__ import annotations

import contextlib
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from executors.docker_engine import engine_version

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def detect_gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs through NVML; an empty list where there is no driver or no GPU."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    gpus: list[dict[str, Any]] = []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append({
                "index": index,
                "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "vendor": "NVIDIA",
                "memory_mb": int(memory.total // (1024 * 1024)),
                "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                "driver_version": driver,
            })
    except pynvml.NVMLError:
        pass
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    return gpus


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def system_capabilities(data_dir: Path, docker_host: str | None) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    disk = shutil.disk_usage(data_dir if data_dir.exists() else Path("/"))
    docker_version = engine_version(docker_host)
    return {
        "platform": sys.platform if sys.platform != "linux" else "linux",
        "architecture": _ARCH.get(platform.machine(), platform.machine()),
        "kernel_version": platform.release(),
        "cpu_model": cpu_model(),
        "cpu_cores": psutil.cpu_count(logical=False) or psutil.cpu_count() or 0,
        "cpu_threads": psutil.cpu_count() or 0,
        "total_memory_mb": memory.total // (1024 * 1024),
        "available_memory_mb": memory.available // (1024 * 1024),
        "total_disk_mb": disk.total // (1024 * 1024),
        "available_disk_mb": disk.free // (1024 * 1024),
        "has_docker": docker_version is not None,
        "docker_version": docker_version or "",
        "has_python": True,
        "python_version": platform.python_version(),
        "gpus": detect_gpus(),
    }


def summary(caps: dict[str, Any]) -> dict[str, Any]:
    """The small form peers publish in the DHT (no GPU names or UUIDs, no kernel)."""
    return {
        "platform": caps["platform"],
        "architecture": caps["architecture"],
        "cpu_cores": caps["cpu_cores"],
        "total_memory_mb": caps["total_memory_mb"],
        "has_docker": caps["has_docker"],
        "gpu_count": len(caps["gpus"]),
        "gpu_memory_mb": sum(g["memory_mb"] for g in caps["gpus"]),
    }


class CapabilityProbe:
    """Caches the probe for a few seconds: the Docker and NVML calls are slow."""

    def __init__(self, data_dir: Path, docker_host: str | None, *, ttl: float = 10.0) -> None:
        self.data_dir, self.docker_host, self.ttl = data_dir, docker_host, ttl
        self._cached: tuple[float, dict[str, Any]] | None = None

    def get(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self.ttl:
            self._cached = (now, system_capabilities(self.data_dir, self.docker_host))
        return self._cached[1]
