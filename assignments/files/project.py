"""Generated files room. The user's compose project as the settings describe it: its base files,
the tool in use, the files gpuconfig writes for that tool, and the check of what each service
really gets."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from io import StringIO
from pathlib import Path

import yaml
from django.conf import settings
from dotenv import dotenv_values

from assignments.files.entries import FileEntry, device_id
from assignments.files.staging import stage_files
from gpuconfig_site.hosts import host_config_dir

from . import model, rendering, tools
from .lint import cdi_findings, stack_lint
from .reading import BaseStack, compose_files_setting, stack_read

logger = logging.getLogger(__name__)

CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
PODMAN_HASH_LABEL = "io.podman.compose.config-hash"
_DEFAULT_ARGV = {tools.V2: ("docker", "compose"), tools.PODMAN: ("podman-compose",)}
_DEFAULT_ARGV[tools.V1] = ("docker-compose",)

_stack_cache: dict[tuple, BaseStack] = {}
_stack_lock = threading.Lock()

# A service's problem when the tool could not read the stack at all: the one error is the
# report's ``error``, not repeated on every service.
NOT_CHECKED = "Not checked: the compose tool could not read the stack (see the error)."


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def stack_current() -> BaseStack | None:
    """The base stack named by ``GPUCONFIG_COMPOSE_FILE`` (None when unset); re-read when a file
    or its ``.env`` changes. Raises ``ComposeInvalid`` when it cannot be read."""
    files = compose_files_setting(getattr(settings, "GPUCONFIG_COMPOSE_FILE", None))
    if not files:
        return None
    profiles = getattr(settings, "GPUCONFIG_COMPOSE_PROFILES", "") or ""
    key = (
        files,
        profiles,
        os.environ.get("COMPOSE_PROFILES", ""),
        *(_mtime(p) for p in (*files, files[0].parent / ".env")),
    )
    with _stack_lock:
        if key in _stack_cache:
            return _stack_cache[key]
    stack = stack_read(files, profiles=profiles)
    with _stack_lock:
        _stack_cache.clear()
        _stack_cache[key] = stack
    return stack


def base_budgets() -> dict[str, float]:
    """The ``VRAM_BUDGET_GB`` the base file gives each service (empty when there is no base or
    it cannot be read: the catalog's defaults then apply)."""
    try:
        stack = stack_current()
    except model.ComposeInvalid as exc:
        logger.warning("Cannot read the base compose file: %s", exc)
        return {}
    if stack is None:
        return {}
    return {s.name: s.budget_gb for s in stack.services.values() if s.budget_gb is not None}


def base_inactive() -> dict[str, tuple[str, ...]]:
    """The services the base file puts only under compose profiles none of which is active,
    with those profiles (empty when there is no base or it cannot be read: every service is
    then planned, as without a base). Known, not placed: the planner leaves them out."""
    try:
        stack = stack_current()
    except model.ComposeInvalid:
        return {}  # base_budgets logs it, on the same read
    if stack is None:
        return {}
    return {name: s.profiles for name, s in stack.inactive.items()}


def tool_current(name: str | None = None) -> tuple[str, tools.ComposeTool | None]:
    """The tool kind to write files for, and the installed tool of that kind (None when none
    is installed). ``name`` (or ``GPUCONFIG_COMPOSE_TOOL``) ``auto``: what is installed, else
    Compose v2's form. Raises ``UnknownTool`` for a name that is not a tool."""
    choice = name or getattr(settings, "GPUCONFIG_COMPOSE_TOOL", tools.AUTO) or tools.AUTO
    tool = tools.tool_detect(choice)
    kind = tool.name if tool else (tools.V2 if choice == tools.AUTO else choice)
    return kind, tool


def project_name(stack: BaseStack | None) -> str | None:
    return getattr(settings, "GPUCONFIG_COMPOSE_PROJECT", None) or (
        stack.default_project() if stack else None
    )


def files_render(entries: list[FileEntry], *, tool: str | None = None) -> rendering.Rendered:
    """The generated compose files for the tool in use (or ``tool``)."""
    try:
        stack = stack_current()
    except model.ComposeInvalid as exc:
        logger.warning("Cannot read the base compose file, writing a plain override: %s", exc)
        stack = None
    # Without a base there is nothing to override: the plain form suits every tool.
    kind = tools.V2 if stack is None else tool or tool_current()[0]
    return rendering.render(
        entries, stack=stack, tool=kind, id_format=settings.GPUCONFIG_DEVICE_ID_FORMAT
    )


def _command_args(stack: BaseStack | None, rendered: rendering.Rendered, folder: Path) -> dict:
    # gpuconfig's own profiles go on the command line; COMPOSE_PROFILES the tool reads itself.
    extra = getattr(settings, "GPUCONFIG_COMPOSE_PROFILES", "") or ""
    return {
        "files": [*(stack.files if stack else ()), *(folder / n for n in rendered.files)],
        "project": project_name(stack),
        "env_file": folder / rendering.ENV_NAME if rendered.env_file is not None else None,
        "profiles": tuple(p.strip() for p in extra.split(",") if p.strip()),
    }


def _write(rendered: rendering.Rendered, folder: Path) -> None:
    for name, text in rendered.files.items():
        (folder / name).write_text(text)
    if rendered.env_file is not None:
        (folder / rendering.ENV_NAME).write_text(rendered.env_file)


def _model_services(stack: BaseStack | None, rendered: rendering.Rendered) -> dict:
    documents = [model.load(p.read_text(), source=str(p)) for p in (stack.files if stack else ())]
    documents += [model.load(text) for text in rendered.files.values()]
    env = dict(stack.env) if stack else {}
    if rendered.env_file is not None:
        env = {k: v or "" for k, v in dotenv_values(stream=StringIO(rendered.env_file)).items()}
    env.update(os.environ)
    return model.interpolate(model.merge_files(documents), env).get("services") or {}


NO_BASE = (
    "No base compose file is set: set GPUCONFIG_COMPOSE_FILE to your stack's compose file "
    "(and restart gpuconfig) so it can check what each service really gets and replace the "
    "base's GPU settings. Until then the generated override is shown as gpuconfig writes it."
)


def base_error() -> str:
    """Why the base compose file named by ``GPUCONFIG_COMPOSE_FILE`` cannot be read ("" when
    it can, or none is set)."""
    try:
        stack_current()
    except model.ComposeInvalid as exc:
        return f"gpuconfig cannot read the base compose file: {exc}"
    return ""


def _describe_problem(assigned: list[str], effective: list[str], requests: int) -> str:
    if not assigned:
        return f"should have no GPU but gets {', '.join(effective)}"
    if requests > 1:
        return (
            f"{requests} GPU requests ({', '.join(effective)}): the service sees more than its "
            "assigned GPU and uses the first one visible"
        )
    if not effective:
        return "gets no GPU"
    return f"gets {', '.join(effective)} instead of {', '.join(assigned)}"


def _preview_folder(kind: str) -> Path:
    return host_config_dir().resolve() / "preview" / kind


def _preview_write(rendered: rendering.Rendered, folder: Path) -> None:
    """The files for a tool other than the one in use, written (atomically) where the shown
    commands name them; the files in use are untouched."""
    texts: dict[Path, str | None] = {folder / n: None for n in rendering.GENERATED_NAMES}
    texts.update({folder / n: t for n, t in rendered.files.items()})
    texts[folder / rendering.ENV_NAME] = rendered.env_file
    stage_files(texts).commit()


def compose_check(entries: list[FileEntry], *, tool_name: str | None = None) -> dict:
    """What each managed service gets from the base file(s) plus the files gpuconfig writes for
    the tool: from the installed tool's ``config`` (with a timeout), else from the project's own
    merge model (``checked_by``). Every GPU form is read (``form`` per service). Without a base
    file the tool is not run (it would fail on an override alone) and ``notice`` says what to
    set. For a tool other than the one in use, the files are written to a preview folder that
    the commands name. Raises ``UnknownTool`` for an unknown ``tool_name``."""
    kind, tool = tool_current(tool_name)
    in_use = tool_current()[0]
    stack_error = ""
    try:
        stack = stack_current()
    except model.ComposeInvalid as exc:
        stack, stack_error = None, f"gpuconfig cannot read the base compose file: {exc}"
    configured = compose_files_setting(getattr(settings, "GPUCONFIG_COMPOSE_FILE", None))
    id_format = settings.GPUCONFIG_DEVICE_ID_FORMAT
    rendered = rendering.render(entries, stack=stack, tool=kind, id_format=id_format)
    shown = tool or tools.ComposeTool(kind, _DEFAULT_ARGV[kind], "")
    config_dir = host_config_dir().resolve()
    folder = config_dir
    preview = ""
    if kind != in_use and stack is not None:
        folder = _preview_folder(kind)
        try:
            _preview_write(rendered, folder)
            preview = (
                f"The files in {config_dir} are for {in_use}. These commands use the files for "
                f"{kind}, written to {folder}; to use {kind}, set GPUCONFIG_COMPOSE_TOOL={kind}."
            )
        except OSError as exc:
            folder = config_dir
            preview = (
                f"The files in {config_dir} are for {in_use}, not {kind}, and the preview folder "
                f"cannot be written ({exc.strerror or exc}): set GPUCONFIG_COMPOSE_TOOL={kind} "
                "and save to get them."
            )
    cwd = stack.project_dir if stack else config_dir
    shown_args = _command_args(stack, rendered, folder)
    inactive = stack.inactive if stack else {}
    result = {
        "tool": {"name": kind, "version": tool.version if tool else None},
        "cwd": str(cwd),
        "up_command": shown.command(["up", "-d"], display=True, **shown_args),
        "config_command": shown.command(["config"], display=True, **shown_args),
        "checked_by": "tool" if tool and stack else "model",
        "base_files": [str(p) for p in (stack.files if stack else configured)],
        "error": stack_error,
        "notice": "" if configured else NO_BASE,
        "preview": preview,
        "files_dir": str(folder),
        "patch": rendered.patch,
        "unmanaged": sorted(
            set(stack.gpu_services) - {e.service for e in entries} if stack else set()
        ),
        "not_in_stack": sorted(
            {e.service for e in entries} - set(rendered.managed) - set(inactive)
        ),
        "profiles": list(stack.profiles) if stack else [],
        "inactive": [
            {"service": name, "profiles": list(s.profiles), "form": s.form}
            for name, s in sorted(inactive.items())
            if s.uses_gpu or name in {e.service for e in entries}
        ],
    }
    try:
        if tool is not None and stack is not None:
            with tempfile.TemporaryDirectory(prefix="gpuconfig-compose-") as tmp:
                _write(rendered, Path(tmp))
                done = tool.run(
                    ["config"],
                    cwd=cwd,
                    timeout=float(getattr(settings, "GPUCONFIG_COMPOSE_TIMEOUT", 30)),
                    **_command_args(stack, rendered, Path(tmp)),
                )
            services = (yaml.safe_load(done.stdout) or {}).get("services") or {}
        else:
            services = _model_services(stack, rendered)
    except (tools.ComposeToolError, model.ComposeInvalid, yaml.YAMLError) as exc:
        result["error"] = str(exc)
        services = {}

    by_name = {e.service: e for e in entries}
    rows = []
    for name in rendered.managed:
        entry = by_name[name]
        assigned = [] if entry.gpu_index is None else [device_id(entry, id_format)]
        # podman-compose prints ``gpus:`` in its config but gives the container nothing for it.
        use = model.gpu_use(services.get(name) or {}, gpus_key=kind != tools.PODMAN)
        effective = use.effective
        base = stack.services.get(name) if stack else None
        problem = rendered.problems.get(name, "")
        selected = use.cuda_visible is not None and bool(use.exposed)
        ok = not problem and not result["error"] and effective == assigned
        ok = ok and (selected or list(use.exposed) == assigned)
        ok = ok and use.reservation_requests <= 1
        if not ok and not problem:
            problem = (
                NOT_CHECKED
                if result["error"]
                else _describe_problem(assigned, effective, use.sources)
            )
        rows.append(
            {
                "service": name,
                "form": base.form if base else "none",
                "assigned": assigned,
                "effective": effective,
                "ok": ok,
                "problem": problem,
            }
        )
    result["services"] = rows
    result["ok"] = not result["error"] and all(r["ok"] for r in rows)
    return result


def config_labels(entries: list[FileEntry]) -> dict[str, dict[str, str]]:
    """The compose labels a recreated container must carry so that the tool in use sees it as
    created from the written files: Compose v2's ``config-hash`` (from ``config --hash``), or
    podman-compose's own ``io.podman.compose.config-hash``, per service. Empty when there is
    no base file or the tool records no hash (docker-compose 1.29)."""
    try:
        stack = stack_current()
        if stack is None:
            return {}
        kind, tool = tool_current()
    except (model.ComposeInvalid, tools.UnknownTool) as exc:
        logger.warning("No compose labels for recreated containers: %s", exc)
        return {}
    if tool is None or kind not in (tools.V2, tools.PODMAN):
        return {}
    label = CONFIG_HASH_LABEL if kind == tools.V2 else PODMAN_HASH_LABEL
    rendered = rendering.render(
        entries, stack=stack, tool=kind, id_format=settings.GPUCONFIG_DEVICE_ID_FORMAT
    )
    config_dir = host_config_dir().resolve()
    try:
        hashes = tool.config_hashes(
            cwd=stack.project_dir,
            timeout=float(getattr(settings, "GPUCONFIG_COMPOSE_TIMEOUT", 30)),
            **_command_args(stack, rendered, config_dir),
        )
    except tools.ComposeToolError as exc:
        logger.warning("No compose config-hash for recreated containers: %s", exc)
        return {}
    return {service: {label: digest} for service, digest in hashes.items()}


def compose_lint(entries: list[FileEntry]) -> dict:
    """The lint of the user's stack as it runs with the files gpuconfig writes for the tool in
    use: ``{findings: [{rule, service, message, fix}], error, notice}``. Without a base file
    only the host's CDI specs are checked."""

    cdi_dirs = getattr(settings, "GPUCONFIG_CDI_SPEC_DIRS", ["/etc/cdi", "/var/run/cdi"])
    try:
        stack = stack_current()
    except model.ComposeInvalid as exc:
        findings = cdi_findings(cdi_dirs, users=[])
        return {
            "findings": [f.as_dict() for f in findings],
            "error": f"gpuconfig cannot read the base compose file: {exc}",
            "notice": "",
        }
    if stack is None:
        findings = cdi_findings(cdi_dirs, users=[])
        return {"findings": [f.as_dict() for f in findings], "error": "", "notice": NO_BASE}
    id_format = settings.GPUCONFIG_DEVICE_ID_FORMAT
    rendered = rendering.render(entries, stack=stack, tool=tool_current()[0], id_format=id_format)
    try:
        merged = _model_services(stack, rendered)
    except model.ComposeInvalid as exc:
        return {"findings": [], "error": str(exc), "notice": ""}
    findings = stack_lint(stack, merged, entries, id_format=id_format, cdi_dirs=cdi_dirs)
    return {"findings": [f.as_dict() for f in findings], "error": "", "notice": ""}
