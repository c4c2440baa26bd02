"""The simulated backend, and how ``gpus.backends`` picks a backend from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from gpus.backends import BackendError, BackendUnavailable, ScanResult, get_backend, scan
from gpus.backends.base import GpuReading
from gpus.backends.nvidia_smi import NvidiaSmiBackend
from gpus.backends.nvml import NvmlBackend
from gpus.backends.simulated import SimulatedBackend

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFERENCE = FIXTURES / "simulated" / "reference.yml"
USER_GUIDE_EXAMPLE = (
    Path(__file__).resolve().parents[2] / "config" / "examples" / "gpus.reference.yml"
)

ONE_GPU = """
- index: 0
  name: NVIDIA RTX A5500
  uuid: GPU-aaaa
  vram_total_mb: 24564
  vram_used_mb: 1000
  compute_capability: [8, 6]
"""


@pytest.fixture
def simulate(settings):
    """Set GPUCONFIG_SIMULATED_GPUS; returns the setter."""

    def use(value):
        settings.GPUCONFIG_SIMULATED_GPUS = value

    return use


def test_reads_the_reference_file(simulate):
    simulate(str(REFERENCE))

    readings = SimulatedBackend().scan()

    assert readings == [
        GpuReading(
            index=0,
            uuid="GPU-5d2a1c3e-8f4b-4a6d-9e21-7c0b3f9a5500",
            name="NVIDIA RTX A5500",
            vram_total_mb=24564,
            vram_used_mb=19763,
            compute_capability=(8, 6),
            utilization_percent=35,
            temperature_c=54,
            power_w=85.25,
            pci_bus_id="00000000:01:00.0",
        ),
        GpuReading(
            index=1,
            uuid="GPU-0b7e44f2-19c8-4e3a-b6d0-2f5e8a1c0400",
            name="NVIDIA RTX A400",
            vram_total_mb=4094,
            vram_used_mb=307,
            compute_capability=(8, 6),
            utilization_percent=3,
            pci_bus_id="00000000:02:00.0",
        ),
    ]


def test_user_guide_example_is_the_reference_hardware():
    assert USER_GUIDE_EXAMPLE.read_text() == REFERENCE.read_text()


def test_accepts_a_path_object(simulate):
    simulate(REFERENCE)

    assert [r.index for r in SimulatedBackend().scan()] == [0, 1]


def test_reads_inline_yaml(simulate):
    simulate(ONE_GPU)

    (reading,) = SimulatedBackend().scan()

    assert reading.uuid == "GPU-aaaa"
    assert reading.compute_capability == (8, 6)
    assert reading.temperature_c is None
    assert reading.lost is False


def test_empty_list_means_no_gpus(simulate):
    simulate("[]")

    assert SimulatedBackend().scan() == []


def test_rereads_the_file_on_every_scan(simulate, tmp_path: Path):
    path = tmp_path / "gpus.yml"
    path.write_text(ONE_GPU)
    simulate(str(path))
    backend = SimulatedBackend()
    assert [r.uuid for r in backend.scan()] == ["GPU-aaaa"]

    path.write_text("[]")

    assert backend.scan() == []


def test_unavailable_false_reports_a_lost_gpu(simulate):
    simulate(ONE_GPU + "  available: false\n")

    (reading,) = SimulatedBackend().scan()

    assert reading.lost is True
    assert reading.vram_total_mb == 24564


def test_sorted_by_index(simulate):
    second = ONE_GPU.replace("index: 0", "index: 1").replace("GPU-aaaa", "GPU-bbbb")
    simulate(second + ONE_GPU)

    assert [r.index for r in SimulatedBackend().scan()] == [0, 1]


@pytest.mark.parametrize(
    ("written", "expected"),
    [('"8.6"', (8, 6)), ("8.9", (8, 9)), ("12.0", (12, 0)), ("[9, 0]", (9, 0))],
)
def test_compute_capability_forms(simulate, written, expected):
    simulate(ONE_GPU.replace("[8, 6]", written))

    assert SimulatedBackend().scan()[0].compute_capability == expected


def test_bad_yaml_is_an_error(simulate):
    simulate("- index: 0\n  name: [unclosed\n")

    with pytest.raises(BackendError, match="not valid YAML"):
        SimulatedBackend().scan()


def test_not_a_list_is_an_error(simulate):
    simulate("gpus:\n  - index: 0\n")

    with pytest.raises(BackendError, match="must be a YAML list of GPUs, not dict"):
        SimulatedBackend().scan()


def test_missing_file_is_an_error_naming_it(simulate, tmp_path: Path):
    missing = tmp_path / "nope.yml"
    simulate(str(missing))

    with pytest.raises(BackendError, match="nope.yml cannot be read"):
        SimulatedBackend().scan()


def test_a_word_that_is_neither_file_nor_list_is_an_error(simulate):
    simulate("/etc/no-such-gpus")

    with pytest.raises(BackendError, match="neither an existing file nor a YAML list"):
        SimulatedBackend().scan()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("  vram_used_mb: 1000\n", ""), "missing vram_used_mb"),
        (("vram_used_mb: 1000", "vram_used_mb: 1000\n  vram_totl_mb: 5"), "unknown field"),
        (("vram_total_mb: 24564", "vram_total_mb: lots"), "vram_total_mb must be a positive"),
        (("vram_total_mb: 24564", "vram_total_mb: true"), "vram_total_mb must be a positive"),
        (("vram_used_mb: 1000", "vram_used_mb: 30000"), "at most vram_total_mb"),
        (("[8, 6]", '"eight"'), "compute_capability must be"),
        (("index: 0", "index: -1"), "index must be a non-negative"),
        (("uuid: GPU-aaaa", 'uuid: ""'), "uuid must be a non-empty string"),
        (("[8, 6]", "[8, 6]\n  utilization_percent: 140"), "utilization_percent"),
        (("[8, 6]", "[8, 6]\n  available: maybe"), "available must be true or false"),
        # Values that would overflow the inventory's columns are refused by the backend.
        (
            ("name: NVIDIA RTX A5500", "name: " + "A" * 300),
            "name must be a non-empty string of at most 200",
        ),
        (
            ("uuid: GPU-aaaa", "uuid: GPU-" + "a" * 100),
            "uuid must be a non-empty string of at most 96",
        ),
        (("index: 0", "index: 70000"), "index must be a non-negative integer of at most 32767"),
        (("vram_total_mb: 24564", "vram_total_mb: 3000000000"), "vram_total_mb must be"),
        (("[8, 6]", "[80000, 6]"), "compute_capability must be"),
        (("[8, 6]", "[8, 6]\n  temperature_c: 99999"), "temperature_c must be an integer from"),
        (("[8, 6]", "[8, 6]\n  pci_bus_id: " + "0" * 40), "pci_bus_id must be a string of"),
        (("[8, 6]", "[8, 6]\n  power_w: .inf"), "power_w must be"),
    ],
)
def test_invalid_entries_are_errors_naming_the_problem(simulate, change, message):
    old, new = change
    assert old in ONE_GPU
    simulate(ONE_GPU.replace(old, new))

    with pytest.raises(BackendError, match=message) as raised:
        SimulatedBackend().scan()

    assert "entry 0" in str(raised.value)


def test_an_entry_that_is_not_a_mapping_is_an_error(simulate):
    simulate("- just a string\n")

    with pytest.raises(BackendError, match="entry 0: expected a mapping"):
        SimulatedBackend().scan()


def test_duplicate_uuids_are_an_error(simulate):
    simulate(ONE_GPU + ONE_GPU.replace("index: 0", "index: 1"))

    with pytest.raises(BackendError, match="two GPUs have uuid 'GPU-aaaa'"):
        SimulatedBackend().scan()


def test_unset_is_unavailable(simulate):
    simulate(None)

    with pytest.raises(BackendUnavailable):
        SimulatedBackend().scan()


# Choosing the backend


@pytest.mark.parametrize(
    ("name", "cls"),
    [("nvml", NvmlBackend), ("nvidia-smi", NvidiaSmiBackend), ("simulated", SimulatedBackend)],
)
def test_get_backend_by_name(name, cls):
    backend = get_backend(name)

    assert type(backend) is cls
    assert backend.name == name


def test_get_backend_reads_the_setting_when_called(settings):
    settings.GPUCONFIG_GPU_BACKEND = "nvidia-smi"
    assert isinstance(get_backend(), NvidiaSmiBackend)

    settings.GPUCONFIG_GPU_BACKEND = "simulated"
    assert isinstance(get_backend(), SimulatedBackend)


def test_get_backend_accepts_a_dotted_path(settings):
    path = "gpus.backends.simulated.SimulatedBackend"
    assert isinstance(get_backend(path), SimulatedBackend)

    settings.GPUCONFIG_GPU_BACKEND = path
    assert isinstance(get_backend(), SimulatedBackend)


@pytest.mark.parametrize(
    "value", ["cuda", "gpus.backends.nope.Backend", "gpus.backends.base.BackendError"]
)
def test_unknown_backend_is_improperly_configured(settings, value):
    settings.GPUCONFIG_GPU_BACKEND = value

    with pytest.raises(ImproperlyConfigured):
        get_backend()
    with pytest.raises(ImproperlyConfigured):
        scan()


def test_auto_is_not_a_single_backend():
    with pytest.raises(ValueError, match="scan"):
        get_backend("auto")


def test_auto_with_simulated_gpus_set_uses_them(settings, simulate):
    settings.GPUCONFIG_GPU_BACKEND = "auto"
    simulate(str(REFERENCE))

    result = scan()

    assert isinstance(result, ScanResult)
    assert result.backend == "simulated"
    assert len(result.readings) == 2
    assert result.notes


def test_auto_with_bad_simulated_gpus_raises(settings, simulate):
    """A configured simulation that does not parse is an error, not a silent fall-through."""
    settings.GPUCONFIG_GPU_BACKEND = "auto"
    simulate("{not: a list}")

    with pytest.raises(BackendError):
        scan()


def test_explicit_name_overrides_the_setting(settings, simulate):
    settings.GPUCONFIG_GPU_BACKEND = "nvml"
    simulate("[]")

    assert scan("simulated") == ScanResult(backend="simulated", readings=[], notes=[])


def test_explicit_simulated_without_gpus_set_propagates_unavailable(settings, simulate):
    settings.GPUCONFIG_GPU_BACKEND = "simulated"
    simulate(None)

    with pytest.raises(BackendUnavailable):
        scan()


def test_auto_order_and_none_when_nothing_runs(settings, simulate, monkeypatch):
    """Under auto NVML is asked first, then nvidia-smi; neither running gives backend None."""
    settings.GPUCONFIG_GPU_BACKEND = "auto"
    simulate(None)
    asked = []

    def unavailable(self):
        asked.append(self.name)
        raise BackendUnavailable(f"no {self.name} here")

    monkeypatch.setattr(NvmlBackend, "scan", unavailable)
    monkeypatch.setattr(NvidiaSmiBackend, "scan", unavailable)

    result = scan()

    assert asked == ["nvml", "nvidia-smi"]
    assert result == ScanResult(
        backend=None,
        readings=[],
        notes=["nvml skipped: no nvml here", "nvidia-smi skipped: no nvidia-smi here"],
    )


def test_processes_per_gpu_are_reported_compute_and_graphics(simulate):
    simulate(
        ONE_GPU
        + "  processes:\n"
        + "    - {pid: 4242, used_mb: 18944}\n"
        + "    - {pid: 4310, used_mb: 640, kind: compute}\n"
        + "    - {pid: 77, used_mb: 12, kind: graphics}\n"
    )

    (reading,) = SimulatedBackend().scan()

    assert reading.processes == ((4242, 18944), (4310, 640))
    assert reading.graphics_processes == ((77, 12),)
    assert reading.processes_used_mb == 18944 + 640


@pytest.mark.parametrize(
    ("processes", "problem"),
    [
        ("{pid: 1}", "processes must be a list"),
        ("[{pid: 0, used_mb: 1}]", "process 0: pid must be a positive integer"),
        ("[{pid: 5, used_mb: -1}]", "process 0: used_mb must be a non-negative integer"),
        ("[{pid: 5, used_mb: 1, kind: video}]", "process 0: kind must be compute or graphics"),
        ("[{pid: 5, used_mb: 1, name: x}]", "process 0 must be a mapping of pid, used_mb"),
    ],
)
def test_malformed_processes_are_an_error_naming_the_entry(simulate, processes, problem):
    simulate(ONE_GPU + f"  processes: {processes}\n")

    with pytest.raises(BackendError, match="entry 0") as raised:
        SimulatedBackend().scan()

    assert problem in str(raised.value)
