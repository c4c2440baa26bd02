"""How long one NVML scan of eight GPUs takes, through the real pynvml code path.

Compiles the NVML stand-in (tests/fixtures/nvml_stub), then, in a child Python whose loader
finds it through LD_LIBRARY_PATH, times ``NvmlBackend().scan()`` many times and prints the
median and 99th percentile. The stand-in answers instantly, so the figures are gpuconfig's and
pynvml's own cost per scan (init, ten calls per GPU, shutdown), not a real driver's.

    python bench/detection.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.plugins.nvml import NVML_STUB_DATA, build_nvml_stub, subprocess_env  # noqa: E402

DATA = NVML_STUB_DATA / "eight_gpus.txt"

CHILD = r"""
import json, sys, time
from gpus.backends.nvml import NvmlBackend
repeat, warmup = int(sys.argv[1]), int(sys.argv[2])
backend = NvmlBackend()
started = time.perf_counter()
count = len(backend.scan())
first_ms = (time.perf_counter() - started) * 1000
for _ in range(warmup):
    backend.scan()
times = []
for _ in range(repeat):
    started = time.perf_counter()
    backend.scan()
    times.append((time.perf_counter() - started) * 1000)
print(json.dumps({"gpus": count, "first_ms": first_ms, "times_ms": times}))
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[rank]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000, help="timed scans (default 2000)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed scans first (default 50)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gpuconfig-bench-") as tmp:
        library_dir = build_nvml_stub(Path(tmp))
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.repeat), str(args.warmup)],
            cwd=REPO_ROOT,
            env=subprocess_env(library_dir=library_dir, data=DATA),
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        sys.exit(f"the benchmark child failed:\n{result.stdout}\n{result.stderr}")
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    times = outcome["times_ms"]
    print(f"NVML scan of {outcome['gpus']} GPUs through pynvml and the stand-in library")
    print(f"  scans timed : {len(times)} (after {args.warmup} warm-up)")
    print(f"  first scan  : {outcome['first_ms']:.3f} ms (loads the library)")
    print(f"  median      : {statistics.median(times):.3f} ms")
    print(f"  p99         : {percentile(times, 0.99):.3f} ms")


if __name__ == "__main__":
    main()
