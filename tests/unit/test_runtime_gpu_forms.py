"""A recreate gives the new container its GPU the way the old one got it: a device request
stays a device request, a CDI name (Podman; Docker 25+'s ``cdi`` driver) stays a CDI name, a
container that selects with ``CUDA_VISIBLE_DEVICES`` keeps the GPUs it is given and selects
anew, one on the nvidia runtime gets ``NVIDIA_VISIBLE_DEVICES``. The GPU a container is read
to use is the same one, so a container already right is not recreated."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from applies.runtime import docker as docker_runtime
from applies.runtime import podman as podman_runtime
from applies.runtime.spec import Replacement, gpu_change, gpus_used

SAMPLE = Path(__file__).parents[1] / "fixtures" / "podman" / "inspect-compose.json"


def test_cuda_selects_among_the_gpus_given():
    assert gpus_used(("all",), ["CUDA_VISIBLE_DEVICES=1"]) == ("1",)
    assert gpus_used(("0", "1"), ["CUDA_VISIBLE_DEVICES=1"]) == ("1",)
    assert gpus_used(("1",), ["CUDA_VISIBLE_DEVICES=1"]) == ()
    assert gpus_used(("1",), []) == ("1",)
    assert gpus_used((), ["NVIDIA_VISIBLE_DEVICES=1"], runtime="nvidia") == ("1",)
    assert gpus_used((), ["NVIDIA_VISIBLE_DEVICES=1"]) == ()


def test_the_change_keeps_the_form():
    # CUDA-pinned with every GPU given: keeps them, selects GPU 0.
    change = gpu_change(("all",), ["CUDA_VISIBLE_DEVICES=1"], ("0",))
    assert (change.exposed, dict(change.env)) == (None, {"CUDA_VISIBLE_DEVICES": "0"})
    # A set given: the position of the GPU in it.
    change = gpu_change(("0", "1"), ["CUDA_VISIBLE_DEVICES=0"], ("1",))
    assert (change.exposed, dict(change.env)) == (None, {"CUDA_VISIBLE_DEVICES": "1"})
    # The GPU is not given: given alone, CUDA's first.
    change = gpu_change(("1",), ["CUDA_VISIBLE_DEVICES=0"], ("0",))
    assert (change.exposed, dict(change.env)) == (("0",), {"CUDA_VISIBLE_DEVICES": "0"})
    change = gpu_change((), ["NVIDIA_VISIBLE_DEVICES=1"], ("0",), runtime="nvidia")
    assert (change.exposed, dict(change.env)) == (None, {"NVIDIA_VISIBLE_DEVICES": "0"})
    assert gpu_change(("1",), [], ("0",)).exposed == ("0",)


def _docker_attrs(requests, env, runtime="runc") -> dict:
    return {
        "Id": "a" * 64,
        "Image": "sha256:" + "b" * 64,
        "Config": {"Image": "busybox", "Env": env, "Labels": {}},
        "HostConfig": {"DeviceRequests": requests, "Runtime": runtime},
        "Mounts": [],
        "NetworkSettings": {"Networks": {}},
    }


def test_docker_keeps_every_gpu_of_a_cuda_pinned_container_and_selects_gpu_0():
    every = [{"Driver": "nvidia", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]]}]
    attrs = _docker_attrs(every, ["PATH=/bin", "CUDA_VISIBLE_DEVICES=1"])
    body, _ = docker_runtime.replacement_spec(attrs, Replacement(("0",), None))
    assert body["HostConfig"]["DeviceRequests"] == every
    assert body["Env"] == ["PATH=/bin", "CUDA_VISIBLE_DEVICES=0"]


def test_docker_gives_a_cdi_pinned_container_a_cdi_name():
    cdi = [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=1"], "Count": 0}]
    attrs = _docker_attrs(cdi, [])
    assert docker_runtime.device_ids_of(attrs["HostConfig"]) == ("1",)
    body, _ = docker_runtime.replacement_spec(attrs, Replacement(("0",), None))
    assert body["HostConfig"]["DeviceRequests"] == [
        {"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=0"], "Count": 0}
    ]


def test_docker_sets_the_runtime_variable_of_a_runtime_pinned_container():
    attrs = _docker_attrs(None, ["NVIDIA_VISIBLE_DEVICES=1"], runtime="nvidia")
    body, _ = docker_runtime.replacement_spec(attrs, Replacement(("0",), None))
    assert body["Env"] == ["NVIDIA_VISIBLE_DEVICES=0"]
    assert not body["HostConfig"]["DeviceRequests"]


@pytest.fixture
def podman_attrs() -> dict:
    return json.loads(SAMPLE.read_text())


def test_podman_keeps_the_cdi_all_of_a_cuda_pinned_container(podman_attrs):
    attrs = copy.deepcopy(podman_attrs)
    attrs["Config"]["Labels"][podman_runtime.DEVICES_LABEL] = json.dumps(["nvidia.com/gpu=all"])
    attrs["Config"]["Env"] = [*attrs["Config"]["Env"], "CUDA_VISIBLE_DEVICES=1"]
    spec = podman_runtime.replacement_spec(attrs, Replacement(("0",), None), name="x")
    assert spec["devices"] == [{"path": "nvidia.com/gpu=all"}]
    assert spec["env"]["CUDA_VISIBLE_DEVICES"] == "0"


def test_podman_moves_a_cdi_pinned_container_by_its_cdi_name(podman_attrs):
    spec = podman_runtime.replacement_spec(podman_attrs, Replacement(("0",), None), name="x")
    assert spec["devices"] == [{"path": "nvidia.com/gpu=0"}]
    assert "CUDA_VISIBLE_DEVICES" not in spec["env"]
