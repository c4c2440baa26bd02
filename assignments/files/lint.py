"""Generated files room. A lint of the user's stack: what makes an assignment not take effect, or
wastes a GPU, each finding with its fix. It reads the base file(s) merged with the files
gpuconfig writes (the merge model, so it runs without a compose tool) and the host's CDI specs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from assignments.files.entries import FileEntry, device_id

from . import model
from .reading import BaseStack

COMMON_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm")


@dataclass(frozen=True)
class Finding:
    """One lint finding: the rule, the service (empty: the stack or the host), what is wrong
    and how to fix it."""

    rule: str
    service: str
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _env_against_assignment(name, svc, use, assigned) -> Iterable[Finding]:
    env = model.as_mapping(svc.get("environment"))
    nvidia = env.get(model.NVIDIA_ENV)
    if nvidia is not None and svc.get("runtime") != model.NVIDIA and assigned:
        ids = [i.strip() for i in str(nvidia).split(",") if i.strip()]
        if ids != assigned and ids != ["all"]:
            yield Finding(
                "env-against-assignment",
                name,
                f"{model.NVIDIA_ENV}={nvidia} in its environment disagrees with its assigned "
                f"GPU {','.join(assigned)}; with a device request the engine sets it itself.",
                f"Remove {model.NVIDIA_ENV} from {name}'s environment in the base file.",
            )
    cuda = env.get(model.CUDA_ENV)
    if cuda is not None and assigned and use.effective != assigned:
        yield Finding(
            "env-against-assignment",
            name,
            f"{model.CUDA_ENV}={cuda} makes {name} use {','.join(use.effective) or 'no GPU'}, "
            f"not its assigned GPU {','.join(assigned)}.",
            f"Remove {model.CUDA_ENV} from {name}'s environment, or read it from a variable "
            f"(${{GPU_X:-{assigned[0]}}}) that gpuconfig sets.",
        )


def _privileged(name, svc) -> Iterable[Finding]:
    if svc.get("privileged") is True:
        yield Finding(
            "privileged",
            name,
            "privileged: true gives the container every device, so it sees every GPU whatever "
            "it is assigned.",
            f"Remove privileged: true from {name}; give it the capabilities it needs "
            "(cap_add) instead.",
        )


def _device_paths(svc) -> list[str]:
    paths = []
    for entry in svc.get("devices") or []:
        text = entry.get("source") if isinstance(entry, Mapping) else entry
        if isinstance(text, str) and model.cdi_device(text) is None:
            paths.append(text.split(":")[0])
    for entry in svc.get("volumes") or []:
        text = entry.get("source") if isinstance(entry, Mapping) else entry
        if isinstance(text, str):
            paths.append(text.split(":")[0])
    return paths


def _dev_nvidia(name, svc) -> Iterable[Finding]:
    mounted = sorted({p for p in _device_paths(svc) if p.startswith("/dev/nvidia")})
    if mounted:
        yield Finding(
            "dev-nvidia-mounted",
            name,
            f"{', '.join(mounted)} mounted directly: the container reaches those GPUs whatever "
            "it is assigned.",
            f"Remove the /dev/nvidia* entries from {name}'s devices/volumes; the GPU request "
            "gives the device nodes it needs.",
        )


def _capabilities(name, svc) -> Iterable[Finding]:
    try:
        requests = svc["deploy"]["resources"]["reservations"]["devices"] or []
    except (KeyError, TypeError):
        return
    for request in requests:
        if not isinstance(request, Mapping) or request.get("driver") != model.NVIDIA:
            continue
        caps = request.get("capabilities") or []
        flat = {c for cap in caps for c in (cap if isinstance(cap, list) else [cap])}
        if "gpu" not in flat:
            yield Finding(
                "reservation-without-gpu-capability",
                name,
                "The base file's NVIDIA device reservation has no capabilities: [gpu]: the "
                "engine does not treat it as a GPU request.",
                f"Add capabilities: [gpu] to {name}'s deploy.resources.reservations.devices.",
            )


def _healthcheck(name, svc) -> Iterable[Finding]:
    check = svc.get("healthcheck")
    if not check or (isinstance(check, Mapping) and check.get("disable")):
        yield Finding(
            "no-healthcheck",
            name,
            "The compose file gives this GPU service no healthcheck, so Apply cannot tell "
            "whether the recreated container works before removing the old one.",
            f"Add a healthcheck to {name} (e.g. test: [CMD, curl, -f, http://localhost/health]).",
        )


def _restart(name, svc) -> Iterable[Finding]:
    if str(svc.get("restart", "")).strip() == "no":
        yield Finding(
            "restart-no",
            name,
            'restart: "no": after a reboot or a crash the service stays down with its GPU idle.',
            f"Set restart: unless-stopped on {name}.",
        )


def _spec_documents(folder: Path) -> Iterable[tuple[Path, Any]]:
    for path in sorted(folder.glob("*")):
        if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if isinstance(data, Mapping):
            yield path, data


def _nodes(edits: Any) -> set[str]:
    nodes = (edits or {}).get("deviceNodes") if isinstance(edits, Mapping) else None
    return {str(n.get("path")) for n in nodes or [] if isinstance(n, Mapping)}


def cdi_findings(folders: Iterable[str], *, users: list[str]) -> list[Finding]:
    """NVIDIA CDI specs in ``folders`` without the common device nodes, in their common edits
    or every device's; ``users``: the services that name CDI GPUs."""
    findings = []
    for folder in folders:
        for path, spec in _spec_documents(Path(folder)):
            if spec.get("kind") != model.CDI_KIND:
                continue
            common = _nodes(spec.get("containerEdits"))
            devices = [d for d in spec.get("devices") or [] if isinstance(d, Mapping)]
            each = [common | _nodes(d.get("containerEdits")) for d in devices] or [common]
            missing = [n for n in COMMON_NODES if not all(n in nodes for nodes in each)]
            if missing:
                who = f" ({', '.join(users)} use it)" if users else ""
                findings.append(
                    Finding(
                        "cdi-spec-without-common-nodes",
                        "",
                        f"The CDI spec {path} lacks {', '.join(missing)}{who}: "
                        f"{model.CDI_KIND}=N then gives only /dev/nvidiaN, and CUDA cannot "
                        "initialise.",
                        "Regenerate it: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml.",
                    )
                )
    return findings


def stack_lint(
    stack: BaseStack,
    merged: Mapping[str, Any],
    entries: list[FileEntry],
    *,
    id_format: str,
    cdi_dirs: Iterable[str],
) -> list[Finding]:
    """Every finding on ``merged`` (the base plus the generated files, interpolated) for the
    stack's GPU services, managed ones checked against their assignment too."""
    by_name = {e.service: e for e in entries}
    findings: list[Finding] = []
    cdi_users = []
    for name in sorted(stack.services):
        svc = merged.get(name) or {}
        use = model.gpu_use(svc)
        entry = by_name.get(name)
        if not stack.services[name].uses_gpu and entry is None:
            continue
        assigned = [device_id(entry, id_format)] if entry and entry.gpu_index is not None else []
        if use.cdi:
            cdi_users.append(name)
        if entry is not None:
            findings += _env_against_assignment(name, svc, use, assigned)
        findings += _privileged(name, svc)
        findings += _dev_nvidia(name, svc)
        # The base as written: gpuconfig's own requests carry the capability, but the base
        # alone (or any tool that keeps its request) does not.
        findings += _capabilities(name, (stack.raw.get("services") or {}).get(name) or {})
        findings += _healthcheck(name, svc)
        findings += _restart(name, svc)
    findings += cdi_findings(cdi_dirs, users=cdi_users)
    return findings
