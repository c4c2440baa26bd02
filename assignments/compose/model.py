"""The project's own model of how compose merges files: used when no compose tool is installed,
and to read the user's base file(s).

It follows the compose specification where GPU placement is concerned: mappings merge key by
key, sequences append (so an override that adds a device request leaves the base's in place),
``environment`` and ``labels`` merge by variable, ``!override`` replaces a value and ``!reset``
removes it. Interpolation follows compose too: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+other}``, ``${VAR+other}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
