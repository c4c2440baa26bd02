"""NVML detection through the real pynvml code path, against a compiled stand-in libnvidia-ml.

Each scan runs in a child Python whose loader finds the stand-in through LD_LIBRARY_PATH
(fixtures in ``tests/plugins/nvml.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugins.nvml import NVML_STUB_DATA, real_nvml_installed

pytestmark = pytest.mark.integration

A5500_UUID = "GPU-5d2a1c3e-8f4b-4a6d-9e21-7c0b3f9a5500"
A400_UUID = "GPU-0b7e44f2-19c8-4e3a-b6d0-2f5e8a1c0400"

needs_no_system_nvml = pytest.mark.skipif(
    real_nvml_installed(),
    reason="this machine has a real libnvidia-ml, which the loader would find",
)


def by_index(outcome: dict) -> dict[int, dict]:
    return {reading["index"]: reading for reading in outcome["readings"]}


def test_reads_both_reference_gpus_with_every_field(nvml_scan):
    """Reads a 24 GB A5500 and a 4 GB A400 with every field, memory floored from bytes to MiB."""
    outcome = nvml_scan("reference.txt")

    assert outcome["backend"] == "nvml"
    assert outcome["notes"] == []
    gpus = by_index(outcome)
    assert sorted(gpus) == [0, 1]
    assert gpus[0] == {
        "index": 0,
        "uuid": A5500_UUID,
        "name": "NVIDIA RTX A5500",
        "vram_total_mb": 24564,
        "vram_used_mb": 19763,
        "compute_capability": [8, 6],
        "utilization_percent": 35,
        "temperature_c": 54,
        "power_w": 85.25,
        "pci_bus_id": "00000000:01:00.0",
        "processes_used_mb": 18944 + 640,
        "lost": False,
        "processes": [[4242, 18944], [4310, 640]],
        "graphics_processes": [],
    }
    a400 = gpus[1]
    assert (a400["uuid"], a400["name"]) == (A400_UUID, "NVIDIA RTX A400")
    assert (a400["vram_total_mb"], a400["vram_used_mb"]) == (4094, 307)
    assert a400["compute_capability"] == [8, 6]
    assert a400["utilization_percent"] == 3
    assert a400["processes"] == [] and a400["processes_used_mb"] == 0
    assert a400["lost"] is False


def test_field_the_gpu_does_not_support_is_none_not_an_error(nvml_scan):
    """The A400 answers NOT_SUPPORTED for temperature and power: None, and nothing logged."""
    outcome = nvml_scan("reference.txt")

    a400 = by_index(outcome)[1]
    assert a400["temperature_c"] is None
    assert a400["power_w"] is None
    assert "WARNING" not in outcome["log"]


def test_lost_gpu_is_reported_lost_and_one_without_uuid_is_skipped(nvml_scan):
    """GPU 1 says GPU_IS_LOST but still has a UUID: lost=True. GPU 2 has no handle: skipped."""
    outcome = nvml_scan("lost.txt")

    assert outcome["backend"] == "nvml"
    gpus = by_index(outcome)
    assert sorted(gpus) == [0, 1]
    assert gpus[0]["lost"] is False
    assert gpus[0]["vram_total_mb"] == 24564
    assert gpus[1]["lost"] is True
    assert gpus[1]["uuid"] == A400_UUID
    assert gpus[1]["vram_total_mb"] is None
    assert "GPU 1" in outcome["log"] and "lost" in outcome["log"]
    assert "GPU 2 skipped" in outcome["log"]


def test_unknown_error_on_memory_marks_the_gpu_lost(nvml_scan, tmp_path: Path):
    """An essential field failing with UNKNOWN is a GPU that no longer answers."""
    data = tmp_path / "unknown.txt"
    data.write_text(f"[gpu]\nname = NVIDIA RTX A5500\nuuid = {A5500_UUID}\nfail = memory UNKNOWN\n")

    gpus = by_index(nvml_scan(data))

    assert gpus[0]["lost"] is True
    assert gpus[0]["uuid"] == A5500_UUID
    assert gpus[0]["name"] == "NVIDIA RTX A5500"


def test_no_permission_for_processes_leaves_them_unknown(nvml_scan, tmp_path: Path):
    """Inside a container NVML may refuse the process list: the GPU is still read."""
    data = tmp_path / "no_permission.txt"
    data.write_text(
        f"[gpu]\nname = NVIDIA RTX A400\nuuid = {A400_UUID}\nmemory_total = 4292870144\n"
        "compute_capability = 8.6\nfail = processes NO_PERMISSION\n"
    )

    gpu = by_index(nvml_scan(data))[0]

    assert gpu["lost"] is False
    assert gpu["vram_total_mb"] == 4094
    assert gpu["processes_used_mb"] is None
    assert gpu["processes"] == []


def test_graphics_processes_are_read_apart_from_compute_ones(nvml_scan, tmp_path: Path):
    """nvmlDeviceGetGraphicsRunningProcesses lists the graphics contexts; the compute total
    (processes_used_mb) stays the compute processes'."""
    data = tmp_path / "graphics.txt"
    data.write_text(
        f"[gpu]\nuuid = {A5500_UUID}\nmemory_total = 25757220864\n"
        "process = 77 1000\ngraphics_process = 90 256\ngraphics_process = 77 1000\n"
    )

    gpu = by_index(nvml_scan(data))[0]

    assert gpu["processes"] == [[77, 1000]]
    assert gpu["graphics_processes"] == [[90, 256], [77, 1000]]
    assert gpu["processes_used_mb"] == 1000


def test_graphics_processes_refused_leave_the_gpu_read(nvml_scan, tmp_path: Path):
    data = tmp_path / "graphics_refused.txt"
    data.write_text(
        f"[gpu]\nuuid = {A5500_UUID}\nmemory_total = 25757220864\nprocess = 77 1000\n"
        "fail = graphics_processes NOT_SUPPORTED\n"
    )

    gpu = by_index(nvml_scan(data))[0]

    assert (gpu["processes"], gpu["graphics_processes"]) == ([[77, 1000]], [])
    assert "WARNING" not in nvml_scan(data)["log"]


def test_a_processes_file_adds_processes_to_the_inventory(nvml_scan, tmp_path: Path):
    """GPUCONFIG_NVML_STUB_PROCESSES gives a fixed inventory the PIDs a test chooses."""
    listing = tmp_path / "pids.txt"
    listing.write_text("# gpu kind pid MiB\n1 compute 501 300\n0 graphics 502 64\n")

    gpus = by_index(nvml_scan("reference.txt", env={"GPUCONFIG_NVML_STUB_PROCESSES": str(listing)}))

    assert gpus[0]["processes"] == [[4242, 18944], [4310, 640]]
    assert gpus[0]["graphics_processes"] == [[502, 64]]
    assert gpus[1]["processes"] == [[501, 300]]


def test_a_bad_processes_file_fails_the_scan(nvml_scan, tmp_path: Path):
    listing = tmp_path / "pids.txt"
    listing.write_text("7 compute 501 300\n")  # no GPU 7

    outcome = nvml_scan("reference.txt", env={"GPUCONFIG_NVML_STUB_PROCESSES": str(listing)})

    assert outcome["error"] == "BackendError"
    assert "expected '<gpu index> compute|graphics <pid> <MiB>'" in outcome["log"]


def test_process_without_memory_figure_counts_as_zero(nvml_scan, tmp_path: Path):
    """NVML may list a process without its memory (NVML_VALUE_NOT_AVAILABLE): kept, as 0 MiB."""
    data = tmp_path / "processes.txt"
    data.write_text(
        f"[gpu]\nuuid = {A5500_UUID}\nmemory_total = 25757220864\n"
        "process = 77 N/A\nprocess = 78 100\n"
    )

    gpu = by_index(nvml_scan(data))[0]

    assert gpu["processes"] == [[77, 0], [78, 100]]
    assert gpu["processes_used_mb"] == 100


def test_driver_not_loaded_is_unavailable(nvml_scan):
    outcome = nvml_scan("driver_not_loaded.txt")

    assert outcome["error"] == "BackendUnavailable"
    assert "Driver Not Loaded" in outcome["message"]


@needs_no_system_nvml
def test_missing_library_is_unavailable_with_a_clear_message(nvml_scan):
    outcome = nvml_scan(None, library=False)

    assert outcome["error"] == "BackendUnavailable"
    assert "NVML is not available" in outcome["message"]
    assert "Library Not Found" in outcome["message"]


def test_failure_after_init_is_a_backend_error(nvml_scan):
    """NVML initialises but cannot count the GPUs: an error, not "no GPUs"."""
    outcome = nvml_scan("count_fails.txt")

    assert outcome["error"] == "BackendError"
    assert "count" in outcome["message"]


def test_driver_without_gpus_reports_none(nvml_scan):
    outcome = nvml_scan("no_gpus.txt")

    assert outcome == {"backend": "nvml", "notes": [], "readings": [], "log": ""}


def test_auto_uses_nvml_when_it_loads(nvml_scan, nvidia_smi_dir):
    outcome = nvml_scan("reference.txt", backend="auto", path_dirs=[nvidia_smi_dir])

    assert outcome["backend"] == "nvml"
    assert len(outcome["readings"]) == 2


@needs_no_system_nvml
def test_auto_falls_through_to_nvidia_smi_when_the_library_is_missing(nvml_scan, nvidia_smi_dir):
    outcome = nvml_scan(None, backend="auto", library=False, path_dirs=[nvidia_smi_dir])

    assert outcome["backend"] == "nvidia-smi"
    assert [r["uuid"] for r in outcome["readings"]] == [A5500_UUID, A400_UUID]
    assert len(outcome["notes"]) == 1
    assert outcome["notes"][0].startswith("nvml skipped:")


@needs_no_system_nvml
def test_auto_finds_no_gpus_when_nothing_can_run(nvml_scan, tmp_path: Path):
    """No library and no nvidia-smi on PATH: backend None, no readings, a note for each."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()

    outcome = nvml_scan(None, backend="auto", library=False, env={"PATH": str(empty_bin)})

    assert outcome["backend"] is None
    assert outcome["readings"] == []
    assert [note.split(" ")[0] for note in outcome["notes"]] == ["nvml", "nvidia-smi"]
    assert "not installed" in outcome["notes"][1]


def test_auto_with_a_failing_nvml_and_no_fallback_raises(nvml_scan, tmp_path: Path):
    """A driver that fails must not read as "every GPU is gone"."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()

    outcome = nvml_scan("count_fails.txt", backend="auto", env={"PATH": str(empty_bin)})

    assert outcome["error"] == "BackendError"
    assert "nvml failed" in outcome["message"]


def test_auto_with_a_failing_nvml_uses_nvidia_smi(nvml_scan, nvidia_smi_dir):
    outcome = nvml_scan("count_fails.txt", backend="auto", path_dirs=[nvidia_smi_dir])

    assert outcome["backend"] == "nvidia-smi"
    assert outcome["notes"][0].startswith("nvml failed:")


# Two scans in one process, switching data files in between: the stand-in reads its data on
# the first nvmlInit after a full shutdown, so the second scan only sees the new file if the
# first one shut NVML down, on its error path too.
TWO_SCANS = r"""
import json, os, sys
from gpus.backends.base import BackendError
from gpus.backends.nvml import NvmlBackend
first, second = sys.argv[1:3]
os.environ["GPUCONFIG_NVML_STUB_DATA"] = first
try:
    before = [r.uuid for r in NvmlBackend().scan()]
except BackendError as error:
    before = type(error).__name__
os.environ["GPUCONFIG_NVML_STUB_DATA"] = second
after = [r.uuid for r in NvmlBackend().scan()]
print(json.dumps([before, after]))
"""


@pytest.mark.parametrize(
    ("first", "expected_first"),
    [("no_gpus.txt", []), ("count_fails.txt", "BackendError")],
)
def test_each_scan_shuts_nvml_down(run_python, first, expected_first):
    result = run_python(
        TWO_SCANS, str(NVML_STUB_DATA / first), str(NVML_STUB_DATA / "reference.txt")
    )

    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout)
    assert before == expected_first
    assert after == [A5500_UUID, A400_UUID]


def test_eight_gpus(nvml_scan):
    outcome = nvml_scan("eight_gpus.txt")

    readings = outcome["readings"]
    assert [r["index"] for r in readings] == list(range(8))
    assert len({r["uuid"] for r in readings}) == 8
    assert readings[7]["vram_used_mb"] == 1000 + 512 * 7
    assert readings[7]["processes"] == [[1007, 512 * 7 + 500]]
    assert readings[7]["compute_capability"] == [9, 0]
