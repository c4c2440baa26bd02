"""The Podman runtime's create body, from the inspect data of a container podman-compose 1.6
made on podman 4.3 (tests/fixtures/podman/inspect-compose.json: ai-llm on GPU 1)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from applies.runtime.podman import (
    DEVICES_LABEL,
    created_devices,
    device_ids_of,
    replacement_spec,
    with_devices,
)
from applies.runtime.spec import Replacement

SAMPLE = Path(__file__).parents[1] / "fixtures" / "podman" / "inspect-compose.json"


@pytest.fixture
def attrs() -> dict:
    return json.loads(SAMPLE.read_text())


def test_the_gpu_of_a_compose_container_comes_from_its_create_command(attrs):
    assert created_devices(attrs) == ["nvidia.com/gpu=1"]
    assert device_ids_of(created_devices(attrs)) == ("1",)


def test_a_recorded_label_wins_and_device_nodes_are_the_last_resort(attrs):
    labelled = copy.deepcopy(attrs)
    labelled["Config"]["Labels"][DEVICES_LABEL] = json.dumps(["nvidia.com/gpu=GPU-abc"])
    assert device_ids_of(created_devices(labelled)) == ("GPU-abc",)

    bare = copy.deepcopy(attrs)
    bare["Config"]["CreateCommand"] = None
    bare["HostConfig"]["Devices"] += [
        {"PathOnHost": "/dev/nvidiactl", "PathInContainer": "/dev/nvidiactl"},
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rw"},
    ]
    assert created_devices(bare) == ["nvidia.com/gpu=1", "/dev/fuse:/dev/fuse:rw"]


def test_other_devices_stay_and_all_means_every_gpu():
    devices = ["vendor.com/fpga=0", "nvidia.com/gpu=0", "nvidia.com/gpu=1"]

    assert with_devices(devices, ("GPU-x",)) == ["vendor.com/fpga=0", "nvidia.com/gpu=GPU-x"]
    assert with_devices(devices, ()) == ["vendor.com/fpga=0"]
    assert device_ids_of(["nvidia.com/gpu=all"]) == ("all",)


def test_the_copy_changes_only_the_gpu_and_budget(attrs):
    spec = replacement_spec(attrs, Replacement(("0",), 3.5), name="sample_ai-llm_1")

    assert spec["name"] == "sample_ai-llm_1"
    assert spec["devices"] == [{"path": "nvidia.com/gpu=0"}]
    assert json.loads(spec["labels"][DEVICES_LABEL]) == ["nvidia.com/gpu=0"]
    assert {k: v for k, v in spec["labels"].items() if k != DEVICES_LABEL} == attrs["Config"][
        "Labels"
    ]
    assert spec["env"]["VRAM_BUDGET_GB"] == "3.5"
    # The old GPU's CDI env and the old short-id hostname are not carried over.
    assert "NVIDIA_VISIBLE_DEVICES" not in spec["env"] and "HOSTNAME" not in spec["env"]
    assert "hostname" not in spec
    assert spec["pod"] == attrs["Pod"]
    assert spec["command"] == attrs["Config"]["Cmd"] and "entrypoint" not in spec
    assert spec["healthconfig"] == attrs["Config"]["Healthcheck"]
    assert spec["restart_policy"] == "unless-stopped"
    assert spec["netns"] == {"nsmode": "none"}
    assert spec["work_dir"] == "/data"
    assert spec["selinux_opts"] == ["disable"]
    assert [m["destination"] for m in spec["mounts"]] == ["/data"]
    assert spec["mounts"][0]["type"] == "bind" and "rw" in spec["mounts"][0]["options"]
    assert sorted((v["Name"], v["Dest"]) for v in spec["volumes"]) == sorted(
        (m["Name"], m["Destination"]) for m in attrs["Mounts"] if m["Type"] == "volume"
    )


def test_ports_networks_tmpfs_resources_and_entrypoint_are_kept(attrs):
    attrs["HostConfig"].update(
        NetworkMode="bridge",
        PortBindings={"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}]},
        Tmpfs={"/run/cache": "rw,size=64m"},
        Memory=2 << 30,
        CpuShares=512,
    )
    attrs["NetworkSettings"]["Networks"] = {
        "hsi": {"Aliases": ["llm", attrs["Id"][:12]]},
    }
    attrs["Config"]["Entrypoint"] = "/bin/tini --"
    attrs["Path"] = "/bin/tini"
    attrs["Args"] = ["--", *attrs["Config"]["Cmd"]]
    attrs["Config"]["Env"].remove("NVIDIA_VISIBLE_DEVICES=1")

    spec = replacement_spec(attrs, Replacement((), None), name="x")

    assert spec["devices"] == [] and "VRAM_BUDGET_GB" not in spec["env"]
    assert spec["Networks"] == {"hsi": {"aliases": ["llm"]}}
    assert spec["netns"] == {"nsmode": "bridge"}
    assert spec["portmappings"] == [
        {"container_port": 8080, "host_port": 18080, "host_ip": "127.0.0.1", "protocol": "tcp"}
    ]
    assert {"type": "tmpfs", "source": "tmpfs", "destination": "/run/cache"}.items() <= spec[
        "mounts"
    ][-1].items()
    assert spec["mounts"][-1]["options"] == ["rw", "size=64m"]
    assert spec["resource_limits"]["memory"] == {"limit": 2 << 30}
    assert spec["resource_limits"]["cpu"] == {"shares": 512}
    assert spec["entrypoint"] == ["/bin/tini", "--"]
