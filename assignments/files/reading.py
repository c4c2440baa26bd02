"""Generated files room. Reading the user's base compose file(s) the way compose does: ``.env``
beside the first file, then the environment, interpolated into the merged files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from . import model

BUDGET_ENV = "VRAM_BUDGET_GB"


@dataclass(frozen=True)
class Pin:
    """How the base pins a service's GPU.

    ``kind`` is ``count`` (``count: 1``: the engine picks), ``ids`` (literal ``device_ids``),
    ``variable`` (``device_ids: ['${GPU_LLM:-0}']``: ``variable`` names it) or ``none`` (no
    NVIDIA reservation). ``devices`` is what it resolves to now (``count:1``, ``0``, ``all``).
    """

    kind: str
    devices: tuple[str, ...] = ()
    variable: str = ""
    line: int | None = None  # 1-based line of the request's ``count`` in the first base file


@dataclass(frozen=True)
class BaseService:
    """One service of the user's stack, as the base file(s) declare it."""

    name: str
    pin: Pin
    budget_gb: float | None
    gpu_requests: int
    capabilities: tuple[str, ...] = ("gpu",)
    use: model.GpuUse = field(default_factory=model.GpuUse)
    # The variable each form reads its GPU from (``cdi`` → ``GPU_LLM`` for
    # ``nvidia.com/gpu=${GPU_LLM:-0}``): gpuconfig sets it rather than override the list.
    variables: dict[str, str] = field(default_factory=dict)
    # The service's ``devices:`` that are not CDI GPUs, kept when its GPU entry is replaced.
    other_devices: tuple[Any, ...] = ()
    profiles: tuple[str, ...] = ()

    @property
    def uses_gpu(self) -> bool:
        return self.pin.kind != "none" or bool(self.use.forms)

    @property
    def form(self) -> str:
        return self.use.form


@dataclass(frozen=True)
class BaseStack:
    """The user's stack: its base files, project directory, ``.env`` and services."""

    files: tuple[Path, ...]
    project_dir: Path
    env: dict[str, str]
    services: dict[str, BaseService]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    # Services under compose profiles none of which is active: known, not placed.
    inactive: dict[str, BaseService] = field(default_factory=dict)
    profiles: tuple[str, ...] = ()

    @property
    def gpu_services(self) -> dict[str, BaseService]:
        return {name: s for name, s in self.services.items() if s.uses_gpu}

    def default_project(self) -> str:
        """The project name compose uses for this stack when none is given."""
        name = self.env.get("COMPOSE_PROJECT_NAME") or self.raw.get("name")
        if not name:
            name = self.project_dir.name
        return re.sub(r"[^a-z0-9_-]", "", str(name).lower()).lstrip("_-") or "default"


def compose_files_setting(value: str | None) -> tuple[Path, ...]:
    """``GPUCONFIG_COMPOSE_FILE`` as absolute paths (comma-separated)."""
    return tuple(
        Path(p.strip()).expanduser().resolve() for p in (value or "").split(",") if p.strip()
    )


def dotenv_of(project_dir: Path) -> dict[str, str]:
    path = project_dir / ".env"
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _budget(environment: Any) -> float | None:
    value = model.as_mapping(environment).get(BUDGET_ENV)
    try:
        budget = float(value)
    except (TypeError, ValueError):
        return None
    return budget if budget > 0 else None


def _count_lines(text: str) -> dict[str, int]:
    """Line (1-based) of the first ``count`` of each service's first GPU request."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=model._Loader)
    except yaml.YAMLError:
        return lines
    if root is None:
        return lines

    def child(node, key):
        if not hasattr(node, "value") or not isinstance(node.value, list):
            return None
        for k, v in node.value:
            if getattr(k, "value", None) == key:
                return v
        return None

    services = child(root, "services")
    for key_node, svc in getattr(services, "value", []) or []:
        node = svc
        for key in ("deploy", "resources", "reservations", "devices"):
            node = child(node, key) if node is not None else None
        for request in getattr(node, "value", []) or []:
            count = child(request, "count")
            if count is not None:
                lines[key_node.value] = count.start_mark.line + 1
                break
    return lines


def _pin(raw_service: Mapping[str, Any], merged_service: Mapping[str, Any]) -> Pin:
    raw = model.gpu_requests(raw_service)
    merged = model.gpu_requests(merged_service)
    if not merged:
        return Pin("none")
    devices = tuple(model.request_devices(merged[0]))
    ids = raw[0].get("device_ids") if raw else None
    if ids:
        variable = model.variable_of(ids[0]) if len(ids) == 1 else None
        if variable:
            return Pin("variable", devices, variable=variable)
        return Pin("ids", devices)
    return Pin("count", devices)


def _variables(raw_service: Mapping[str, Any]) -> dict[str, str]:
    """The variable each GPU form of a service (as written, before interpolation) reads."""
    found: dict[str, str] = {}
    for entry in raw_service.get("devices") or []:
        variable = model.variable_of(model.cdi_device(entry))
        if variable:
            found[model.CDI] = variable
    env = model.as_mapping(raw_service.get("environment"))
    for form, key in ((model.CUDA, model.CUDA_ENV), (model.RUNTIME, model.NVIDIA_ENV)):
        variable = model.variable_of(env.get(key))
        if variable:
            found[form] = variable
    return found


def profiles_active(env: Mapping[str, str], extra: str | None = None) -> tuple[str, ...]:
    """The active compose profiles: ``COMPOSE_PROFILES`` (environment, then ``.env``) and
    ``extra`` (gpuconfig's setting), comma-separated."""
    names = [*(env.get("COMPOSE_PROFILES") or "").split(","), *(extra or "").split(",")]
    return tuple(dict.fromkeys(n.strip() for n in names if n.strip()))


def stack_read(
    files: tuple[Path, ...],
    *,
    environ: Mapping[str, str] | None = None,
    profiles: str | None = None,
) -> BaseStack:
    """Read the base file(s); raises ComposeInvalid when one cannot be read. Services whose
    compose profiles are all inactive (``profiles``: gpuconfig's own, added to
    ``COMPOSE_PROFILES``) are kept apart in ``inactive``."""
    if not files:
        raise model.ComposeInvalid("no base compose file given")
    project_dir = files[0].parent
    dotenv = dotenv_of(project_dir)
    env = {**dotenv, **(os.environ if environ is None else environ)}
    documents = []
    texts = []
    for path in files:
        try:
            text = path.read_text()
        except OSError as exc:
            raise model.ComposeInvalid(f"cannot read {path}: {exc.strerror or exc}") from exc
        texts.append(text)
        documents.append(model.load(text, source=str(path)))
    raw = model.merge_files(documents)
    merged = model.interpolate(raw, env)
    count_lines = _count_lines(texts[0])
    active = profiles_active(env, profiles)
    services: dict[str, BaseService] = {}
    inactive: dict[str, BaseService] = {}
    for name, svc in (merged.get("services") or {}).items():
        svc = svc or {}
        raw_svc = (raw.get("services") or {}).get(name) or {}
        pin = _pin(raw_svc, svc)
        if pin.kind == "count" and name in count_lines:
            pin = Pin(pin.kind, pin.devices, line=count_lines[name])
        requests = model.gpu_requests(svc)
        caps = requests[0].get("capabilities") if requests else None
        services[name] = BaseService(
            name=name,
            pin=pin,
            budget_gb=_budget(svc.get("environment")),
            gpu_requests=len(requests),
            capabilities=tuple(str(c) for c in caps)
            if isinstance(caps, list) and caps
            else ("gpu",),
            use=model.gpu_use(svc),
            variables=_variables(raw_svc),
            other_devices=tuple(d for d in svc.get("devices") or [] if model.cdi_device(d) is None),
            profiles=tuple(str(p) for p in svc.get("profiles") or []),
        )
        if services[name].profiles and not set(services[name].profiles) & set(active):
            inactive[name] = services.pop(name)
    return BaseStack(
        files=files,
        project_dir=project_dir,
        env=dotenv,
        services=services,
        raw=merged,
        inactive=inactive,
        profiles=active,
    )
