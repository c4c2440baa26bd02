"""Every way a base compose file gives a GPU, under the three compose tools: the base pins each
service on GPU 1 in one form (reservations, CDI names, the nvidia runtime, CUDA_VISIBLE_DEVICES,
the service-level ``gpus:``); gpuconfig saves a placement that moves some to GPU 0, and each
tool's own ``config`` on the documented command must give every managed service exactly its GPU,
or the service is reported not ok with its fix. The endpoint's ``effective`` is what the tool
printed, read from every form."""

from __future__ import annotations

import pytest

from assignments.files import model, tools
from tests.conftest import FIXTURES
from tests.integration import test_compose_tools
from tests.integration.test_compose_tools import run
from tests.unit.test_compose_stack import MOVES

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

# The tools on PATH as a user has them, and a saved placement over a copied base.
tool_env = test_compose_tools.tool_env
saved_stack = test_compose_tools.saved_stack

FORMS = FIXTURES / "compose" / "forms"
ASSIGNED = {m["service"]: [str(m["gpu_index"])] for m in MOVES}
# What a tool cannot do from another file, reported per service with its fix (never ok).
CANNOT = {
    # A literal CDI name that must change (the ones already on their GPU need nothing).
    ("cdi", tools.V1): {"ai-yolo26", "ai-clip"},
    # `count: 1` and literal ids: the base patch is offered (see test_compose_tools.py).
    ("reservation", tools.V1): {"ai-yolo26", "ai-florence"},
}


@pytest.mark.parametrize("kind", tools.KINDS)
@pytest.mark.parametrize("form", ["reservation", "cdi", "runtime", "cuda", "gpus"])
def test_each_tool_gives_each_service_its_gpu_in_the_base_form(
    form, kind, tool_env, saved_stack, staff_client
):
    saved_stack(FORMS / form, kind, MOVES)
    report = staff_client.get("/api/system/gpu-config/compose").json()
    assert report["checked_by"] == "tool"
    rows = {r["service"]: r for r in report["services"]}
    if form == "gpus" and kind == tools.V1:
        # docker-compose 1.29 refuses the key: the tool's error is shown, every row not ok.
        assert report["ok"] is False and "gpus" in report["error"]
        assert not any(r["ok"] for r in rows.values())
        return
    merged = run(report["config_command"], report["cwd"])
    cannot = CANNOT.get((form, kind), set())
    for name, row in rows.items():
        use = model.gpu_use(merged[name], gpus_key=kind != tools.PODMAN)
        assert row["effective"] == use.effective, name  # read from every form
        assert row["form"].split("+")[0] in (form, "reservation", "cdi"), row
        if name in cannot:
            assert row["ok"] is False and "Fix:" in row["problem"], row
            continue
        assert row["ok"], row
        assert use.effective == ASSIGNED[name], (name, merged[name])
        if form != "cuda":
            assert list(use.exposed) == ASSIGNED[name], (name, merged[name])
    assert {name for name, row in rows.items() if not row["ok"]} == cannot
    assert report["ok"] is not bool(cannot)
    if form == "cuda":
        # CUDA-pinned services keep what they expose.
        assert merged["ai-llm"]["devices"][0] in (
            "nvidia.com/gpu=all",
            {"source": "nvidia.com/gpu=all", "target": "nvidia.com/gpu=all", "permissions": "rwm"},
        )
    if form == "cdi" and kind != tools.V1:
        florence = [
            d if isinstance(d, str) else f"{d['source']}:{d['target']}"
            for d in merged["ai-florence"]["devices"]
        ]
        assert "/dev/null:/dev/gpuconfig-null" in florence[0], florence
    assert model.as_mapping(merged["ai-enrichment"]["environment"])["VRAM_BUDGET_GB"] == "3.5"


@pytest.mark.parametrize("kind", tools.KINDS)
def test_the_gateway_stack_under_each_tool(kind, tool_env, saved_stack, settings, staff_client):
    """The stack of the issue: a gateway on every GPU selecting with CUDA_VISIBLE_DEVICES from
    .env, a VLM under the `vlm` profile pinned by a CDI name from .env, an unmanaged GPU
    service. Both move to GPU 0 with the profile active; each tool's config agrees."""
    from assignments.models import AiService

    AiService.objects.create(
        name="ai-gateway", display_name="Triton gateway", vram_required_mb=4608, sort_order=9
    )
    settings.GPUCONFIG_COMPOSE_PROFILES = "vlm"
    moves = [{"service": "ai-gateway", "gpu_index": 0}, {"service": "ai-llm", "gpu_index": 0}]
    saved_stack(FIXTURES / "compose" / "gateway", kind, moves)
    report = staff_client.get("/api/system/gpu-config/compose").json()
    assert report["ok"], report
    assert report["unmanaged"] == ["backend"] and report["inactive"] == []
    rows = {r["service"]: r for r in report["services"]}
    assert {n: r["form"] for n, r in rows.items()} == {"ai-gateway": "cdi+cuda", "ai-llm": "cdi"}
    merged = run(report["config_command"], report["cwd"])
    gateway = model.gpu_use(merged["ai-gateway"])
    assert gateway.exposed == ("all",) and gateway.effective == ["0"]
    assert model.gpu_use(merged["ai-llm"]).effective == ["0"]
    assert model.gpu_use(merged["backend"]).effective == ["count:1"]  # left alone


def test_podman_compose_hashes_are_the_ones_it_labels_containers_with(
    tool_env, saved_stack, settings
):
    """The hash a recreated container is stamped with is podman-compose's own, so its `up`
    leaves the container alone (its `up` compares io.podman.compose.config-hash)."""
    from assignments.files.project import PODMAN_HASH_LABEL, config_labels
    from assignments.selectors import config_entries

    saved_stack(FORMS / "cdi", tools.PODMAN, MOVES)
    labels = config_labels(config_entries())
    assert set(labels) >= ASSIGNED.keys()
    digests = {name: label[PODMAN_HASH_LABEL] for name, label in labels.items()}
    assert all(len(d) == 64 for d in digests.values())
    # Its configuration, not its name: ai-llm and ai-clip are alike on GPU 0, ai-yolo26 too.
    assert digests["ai-llm"] == digests["ai-clip"] == digests["ai-yolo26"]
    assert digests["ai-llm"] != digests["ai-florence"]  # on GPU 1, beside another device
