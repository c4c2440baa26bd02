"""The nvidia-smi backend against a stand-in ``nvidia-smi`` put first on PATH.

The stand-in (``tests/fixtures/nvidia_smi_stub/nvidia-smi``) checks it was asked the exact
query and answers as the real tool does in the scenario named by NVIDIA_SMI_STUB_SCENARIO.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gpus.backends import BackendError, BackendUnavailable, scan
from gpus.backends.base import GpuReading
from gpus.backends.nvidia_smi import NvidiaSmiBackend

pytestmark = pytest.mark.integration  # each test runs a subprocess

A5500_UUID = "GPU-5d2a1c3e-8f4b-4a6d-9e21-7c0b3f9a5500"
A400_UUID = "GPU-0b7e44f2-19c8-4e3a-b6d0-2f5e8a1c0400"


@pytest.fixture
def smi(monkeypatch, nvidia_smi_dir: Path, settings):
    """Put the stand-in first on PATH; returns a function that picks its scenario."""
    monkeypatch.setenv("PATH", f"{nvidia_smi_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    settings.GPUCONFIG_NVIDIA_SMI_TIMEOUT = 5

    def use(scenario: str) -> None:
        monkeypatch.setenv("NVIDIA_SMI_STUB_SCENARIO", scenario)

    return use


def test_reads_the_reference_gpus(smi):
    smi("reference")

    readings = NvidiaSmiBackend().scan()

    assert readings == [
        GpuReading(
            index=0,
            uuid=A5500_UUID,
            name="NVIDIA RTX A5500",
            vram_total_mb=24564,
            vram_used_mb=19763,
            compute_capability=(8, 6),
            utilization_percent=35,
            temperature_c=54,
            power_w=85.25,
            pci_bus_id="00000000:01:00.0",
            # --query-compute-apps: a process whose memory is [N/A] counts 0 MiB.
            processes=((4242, 18944), (4310, 0)),
            processes_used_mb=18944,
        ),
        GpuReading(
            index=1,
            uuid=A400_UUID,
            name="NVIDIA RTX A400",
            vram_total_mb=4094,
            vram_used_mb=307,
            compute_capability=(8, 6),
            utilization_percent=3,
            temperature_c=None,
            power_w=None,
            pci_bus_id="00000000:02:00.0",
            processes_used_mb=0,
        ),
    ]


def test_a_failing_process_query_leaves_the_gpus_read(smi, monkeypatch, caplog):
    smi("reference")
    monkeypatch.setenv("NVIDIA_SMI_STUB_APPS_FAIL", "1")

    readings = NvidiaSmiBackend().scan()

    assert [r.uuid for r in readings] == [A5500_UUID, A400_UUID]
    assert all(r.processes == () and r.processes_used_mb is None for r in readings)
    assert "the GPU processes cannot be listed (status 15)" in caplog.text


def test_processes_are_listed_per_gpu_uuid(smi, monkeypatch, tmp_path: Path):
    smi("reference")
    apps = tmp_path / "apps.csv"
    apps.write_text(f"{A400_UUID}, 31337, 2048\n{A5500_UUID}, 4242, 100\n")
    monkeypatch.setenv("NVIDIA_SMI_STUB_APPS", str(apps))

    readings = {r.index: r for r in NvidiaSmiBackend().scan()}

    assert readings[0].processes == ((4242, 100),)
    assert readings[1].processes == ((31337, 2048),)
    assert readings[1].processes_used_mb == 2048


def test_used_counts_the_drivers_reserve_as_nvml_does(smi):
    # On a real H200 with nothing running, nvidia-smi's memory.used said 0 MiB and NVML's used
    # 615 MiB: the driver's reserve. Read as total - free, both backends give 615 MiB, so a
    # fallback from NVML to nvidia-smi does not make 615 MiB appear free.
    smi("h200")

    [reading] = NvidiaSmiBackend().scan()

    assert (reading.vram_total_mb, reading.vram_used_mb) == (143771, 615)
    assert reading.compute_capability == (9, 0)


def test_not_supported_and_na_values_are_none(smi):
    smi("reference")

    a400 = NvidiaSmiBackend().scan()[1]

    assert a400.temperature_c is None  # "[Not Supported]"
    assert a400.power_w is None  # "[N/A]"


def test_gpu_whose_memory_reads_as_lost_is_reported_lost(smi):
    smi("lost")

    readings = NvidiaSmiBackend().scan()

    assert [(r.index, r.lost) for r in readings] == [(0, False), (1, True)]
    assert readings[1].uuid == A400_UUID
    assert readings[1].vram_total_mb is None


def test_partial_output_is_an_error_quoting_the_line(smi):
    smi("partial")

    with pytest.raises(BackendError) as raised:
        NvidiaSmiBackend().scan()

    message = str(raised.value)
    assert "5 fields where 10 were expected" in message
    assert "NVIDIA RTX A400" in message


@pytest.mark.parametrize(
    ("scenario", "quoted"),
    [("garbage", "memory.total is 'lots'"), ("not-csv", "Segmentation fault")],
)
def test_garbage_is_an_error_quoting_the_output(smi, scenario, quoted):
    smi(scenario)

    with pytest.raises(BackendError, match="nvidia-smi printed") as raised:
        NvidiaSmiBackend().scan()

    assert quoted in str(raised.value)


def test_non_zero_exit_is_an_error_quoting_the_output(smi):
    smi("fail")

    with pytest.raises(BackendError) as raised:
        NvidiaSmiBackend().scan()

    assert "status 15" in str(raised.value)
    assert "Unable to determine the device handle" in str(raised.value)


def test_a_hanging_nvidia_smi_times_out_and_is_killed(smi, settings):
    """The stand-in sleeps 30 s in a child holding stdout; the scan gives up at the timeout."""
    smi("hang")
    settings.GPUCONFIG_NVIDIA_SMI_TIMEOUT = 0.5

    started = time.monotonic()
    with pytest.raises(BackendError, match=r"did not answer within 0\.5 s"):
        NvidiaSmiBackend().scan()

    assert time.monotonic() - started < 5


def test_timeout_defaults_to_ten_seconds(smi, settings, monkeypatch):
    smi("reference")
    del settings.GPUCONFIG_NVIDIA_SMI_TIMEOUT
    seen = []
    run = NvidiaSmiBackend._run

    def spy(command, timeout):
        seen.append(timeout)
        return run(command, timeout)

    monkeypatch.setattr(NvidiaSmiBackend, "_run", staticmethod(spy))

    NvidiaSmiBackend().scan()

    assert seen == [10.0, 10.0]  # the GPUs, then their processes


def test_driver_not_loaded_is_unavailable(smi):
    smi("no-driver")

    with pytest.raises(BackendUnavailable, match="couldn't communicate with the NVIDIA driver"):
        NvidiaSmiBackend().scan()


def test_no_devices_is_an_empty_inventory(smi):
    smi("no-devices")

    assert NvidiaSmiBackend().scan() == []


def test_missing_binary_is_unavailable(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(BackendUnavailable, match="not found on PATH"):
        NvidiaSmiBackend().scan()


def test_long_output_is_truncated_in_the_message(smi, nvidia_smi_dir: Path):
    script = nvidia_smi_dir / "nvidia-smi"
    script.write_text("#!/bin/sh\nprintf 'x%.0s' $(seq 1 5000)\necho\nexit 3\n")

    with pytest.raises(BackendError) as raised:
        NvidiaSmiBackend().scan()

    assert len(str(raised.value)) < 500
    assert str(raised.value).endswith("...'")


def test_named_backend_errors_propagate_from_scan(smi, settings):
    smi("fail")
    settings.GPUCONFIG_SIMULATED_GPUS = None

    with pytest.raises(BackendError):
        scan("nvidia-smi")
