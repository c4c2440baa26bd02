"""Fixtures for testing GPU detection through the real pynvml code path.

pynvml loads ``libnvidia-ml.so.1`` once per process with ctypes, through the dynamic loader,
which reads ``LD_LIBRARY_PATH`` when the process starts. So every NVML test runs its scan in a
fresh Python process whose environment points the loader at the stand-in library, compiled
from ``tests/fixtures/nvml_stub/nvml_stub.c`` once per session. The stand-in answers from the
data file named by ``GPUCONFIG_NVML_STUB_DATA``.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
NVML_STUB_SOURCE = FIXTURES / "nvml_stub" / "nvml_stub.c"
NVML_STUB_DATA = FIXTURES / "nvml_stub"
NVIDIA_SMI_STUB = FIXTURES / "nvidia_smi_stub" / "nvidia-smi"
LIBRARY_NAME = "libnvidia-ml.so.1"


def build_nvml_stub(dest_dir: Path) -> Path:
    """Compile the NVML stand-in into ``dest_dir/libnvidia-ml.so.1`` with gcc; return the dir."""
    compiler = shutil.which(os.environ.get("CC", "gcc"))
    if compiler is None:
        raise RuntimeError("gcc is needed to build the NVML stand-in (Debian package: gcc)")
    dest_dir.mkdir(parents=True, exist_ok=True)
    command = [
        compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
        "-fvisibility=hidden", f"-Wl,-soname,{LIBRARY_NAME}",
        "-o", str(dest_dir / LIBRARY_NAME), str(NVML_STUB_SOURCE),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"compiling the NVML stand-in failed:\n{result.stderr}")
    return dest_dir


def real_nvml_installed() -> bool:
    """True where the system itself has an NVML, which the loader would find instead."""
    return ctypes.util.find_library("nvidia-ml") is not None


def subprocess_env(
    *,
    library_dir: Path | None,
    data: Path | None = None,
    path_dirs: Iterable[Path] = (),
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a child Python: the repo importable, the loader pointed at
    ``library_dir`` (only there: None points it at nothing), no GPUCONFIG_* leaking in."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GPUCONFIG_", "NVIDIA_SMI_STUB", "DJANGO_SETTINGS_MODULE"))
        and key not in {"LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH"}
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["LD_LIBRARY_PATH"] = str(library_dir) if library_dir is not None else ""
    if data is not None:
        env["GPUCONFIG_NVML_STUB_DATA"] = str(data)
    dirs = [str(d) for d in path_dirs]
    env["PATH"] = os.pathsep.join([*dirs, env.get("PATH", os.defpath)])
    env.update(extra or {})
    return env


# Run inside the child: configure Django minimally, scan, print the outcome as one JSON line.
SCAN_SCRIPT = r"""
import dataclasses, json, logging, sys
options = json.loads(sys.argv[1])
from django.conf import settings
settings.configure(
    GPUCONFIG_GPU_BACKEND=options["backend"],
    GPUCONFIG_SIMULATED_GPUS=None,
    GPUCONFIG_NVIDIA_SMI_TIMEOUT=options["smi_timeout"],
)
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
from gpus.backends import BackendError, BackendUnavailable, scan
try:
    result = scan()
except (BackendUnavailable, BackendError) as error:
    outcome = {"error": type(error).__name__, "message": str(error)}
else:
    outcome = {
        "backend": result.backend,
        "notes": result.notes,
        "readings": [dataclasses.asdict(reading) for reading in result.readings],
    }
print(json.dumps(outcome))
"""


@pytest.fixture(scope="session")
def nvml_stub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the compiled stand-in ``libnvidia-ml.so.1``."""
    try:
        return build_nvml_stub(tmp_path_factory.mktemp("nvml_stub"))
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def no_library_dir(tmp_path: Path) -> Path:
    """An empty directory: the loader finds no NVML there (nor anywhere, on a machine without
    a driver)."""
    empty = tmp_path / "no_nvml"
    empty.mkdir()
    return empty


@pytest.fixture
def nvidia_smi_dir(tmp_path: Path) -> Path:
    """A directory with the stand-in ``nvidia-smi``, executable, to put first on PATH."""
    directory = tmp_path / "nvidia_smi_bin"
    directory.mkdir()
    target = directory / "nvidia-smi"
    shutil.copyfile(NVIDIA_SMI_STUB, target)
    target.chmod(0o755)
    return directory


@pytest.fixture
def run_python(nvml_stub_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run Python code in a fresh interpreter that loads the stand-in NVML.

    ``run_python(code, *args, data=..., library=True, path_dirs=(), env=None, timeout=60)``;
    ``library=False`` leaves the loader nothing to find.
    """

    def run(
        code: str,
        *args: str,
        data: Path | None = None,
        library: bool = True,
        library_dir: Path | None = None,
        path_dirs: Iterable[Path] = (),
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        chosen = library_dir if library_dir is not None else (nvml_stub_dir if library else None)
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=REPO_ROOT,
            env=subprocess_env(library_dir=chosen, data=data, path_dirs=path_dirs, extra=env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def nvml_scan(run_python: Callable[..., subprocess.CompletedProcess[str]]) -> Callable[..., dict]:
    """Run ``gpus.backends.scan()`` in a child process against the stand-in NVML.

    ``nvml_scan(data_name_or_path, backend="nvml", library=True, path_dirs=(), env=None)``
    returns ``{"backend", "notes", "readings": [GpuReading as dict]}`` or
    ``{"error": class name, "message"}``, plus ``"log"``: what the child wrote to stderr.
    """

    def scan(
        data: str | Path | None = "reference.txt",
        *,
        backend: str = "nvml",
        smi_timeout: float = 5,
        **kwargs,
    ) -> dict:
        if isinstance(data, str):
            data = NVML_STUB_DATA / data
        options = json.dumps({"backend": backend, "smi_timeout": smi_timeout})
        result = run_python(SCAN_SCRIPT, options, data=data, **kwargs)
        if result.returncode != 0 or not result.stdout.strip():
            pytest.fail(
                f"the scan subprocess exited with {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}",
                pytrace=False,
            )
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        outcome["log"] = result.stderr
        return outcome

    return scan
