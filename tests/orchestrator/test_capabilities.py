"""Capabilities: real psutil values, and NVML mapped through a stand-in (no NVIDIA GPU here)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from orchestrator.capabilities import CapabilityProbe, detect_gpus, summary, system_capabilities


class _NVMLError(Exception):
    pass


def _fake_pynvml(*, fail_init: bool = False) -> types.ModuleType:
    """A stand-in for pynvml with two GPUs, one answering in bytes as old bindings do."""
    mod = types.ModuleType("pynvml")
    gpus = [(b"NVIDIA RTX 4090", 24 * 1024**3, b"GPU-aaaa"), ("NVIDIA A100", 80 * 1024**3,
                                                            "GPU-bbbb")]
    state = {"shutdown": 0}

    def init() -> None:
        if fail_init:
            raise _NVMLError("driver not loaded")

    mod.NVMLError = _NVMLError  # type: ignore[attr-defined]
    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: state.__setitem__("shutdown", state["shutdown"] + 1)  # type: ignore[attr-defined]
    mod.nvmlSystemGetDriverVersion = lambda: b"535.129.03"  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: gpus[h][0]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=gpus[h][1])  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUUID = lambda h: gpus[h][2]  # type: ignore[attr-defined]
    mod.state = state  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    mod = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    yield mod


def test_detect_gpus_maps_nvml(fake_nvml: types.ModuleType) -> None:
    assert detect_gpus() == [
        {"index": 0, "name": "NVIDIA RTX 4090", "vendor": "NVIDIA", "memory_mb": 24576,
         "uuid": "GPU-aaaa", "driver_version": "535.129.03"},
        {"index": 1, "name": "NVIDIA A100", "vendor": "NVIDIA", "memory_mb": 81920,
         "uuid": "GPU-bbbb", "driver_version": "535.129.03"},
    ]
    assert fake_nvml.state["shutdown"] == 1  # type: ignore[attr-defined]


def test_detect_gpus_without_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(fail_init=True))
    assert detect_gpus() == []


def test_summary_counts_gpus(fake_nvml: types.ModuleType, tmp_path: Path) -> None:
    caps = system_capabilities(tmp_path, None)
    small = summary(caps)
    assert small["gpu_count"] == 2 and small["gpu_memory_mb"] == 24576 + 81920
    assert "kernel_version" not in small


def test_real_values_are_plausible(tmp_path: Path) -> None:
    caps = system_capabilities(tmp_path, None)
    assert caps["cpu_threads"] == psutil.cpu_count()
    assert caps["total_memory_mb"] == psutil.virtual_memory().total // (1024 * 1024)
    assert 0 < caps["available_disk_mb"] <= caps["total_disk_mb"]
    assert caps["has_python"] is True and caps["python_version"].count(".") == 2
    assert isinstance(caps["gpus"], list)


def test_probe_caches(tmp_path: Path) -> None:
    probe = CapabilityProbe(tmp_path, None, ttl=60)
    assert probe.get() is probe.get()
