"""One configuration file for every entry point; owner-only var/; the gpuconfig command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from assignments.models import ConfigVersion
from gpuconfig_site import cli
from gpuconfig_site.deploy import UnitOptions, systemd_units
from gpus.models import Gpu

ROOT = Path(__file__).resolve().parents[2]


def settings_in_child(
    tmp_path: Path, expr: str, *, setup: bool = False, **env: str
) -> subprocess.CompletedProcess:
    """Import the settings in a fresh process (as every entry point does) and print ``expr``;
    with ``setup``, load the apps too (``django.setup()``), as every entry point then does."""
    child_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GPUCONFIG_", "DJANGO_")) and k not in {"REDIS_URL", "DATABASE_URL"}
    }
    child_env.update({"GPUCONFIG_VAR_DIR": str(tmp_path / "var"), **env})
    code = f"from gpuconfig_site import settings as s; print(repr({expr}))"
    if setup:
        child_env["DJANGO_SETTINGS_MODULE"] = "gpuconfig_site.settings"
        code = f"import django; django.setup(); {code}"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env, capture_output=True, text=True
    )


def test_the_env_file_is_read_and_the_environment_wins(tmp_path):
    env_file = tmp_path / "gpuconfig.env"
    env_file.write_text(
        "# comment\nGPUCONFIG_SCAN_INTERVAL=17\nGPUCONFIG_GPU_BACKEND=nvidia-smi\n"
        "REDIS_URL=redis://127.0.0.1:6399/3\n"
    )
    result = settings_in_child(
        tmp_path,
        "(s.GPUCONFIG_SCAN_INTERVAL, s.GPUCONFIG_GPU_BACKEND, s.REDIS_URL)",
        GPUCONFIG_ENV_FILE=str(env_file),
        GPUCONFIG_GPU_BACKEND="simulated",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(17, 'simulated', 'redis://127.0.0.1:6399/3')"


@pytest.mark.parametrize("where", ["env", "file"])
@pytest.mark.parametrize("blank", ["", "   ", "\n"])
def test_a_blank_api_key_refuses_to_start(tmp_path, where, blank):
    key_file = tmp_path / "api-key"
    key_file.write_text(blank)
    env = (
        {"GPUCONFIG_API_KEY": blank}
        if where == "env"
        else {"GPUCONFIG_API_KEY_FILE": str(key_file)}
    )
    result = settings_in_child(
        tmp_path, "s.GPUCONFIG_API_KEY", GPUCONFIG_ENV_FILE="/dev/null", **env
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "is set but blank" in result.stderr


def test_the_api_key_file_is_read(tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text("s3cret-key\n")
    result = settings_in_child(
        tmp_path,
        "s.GPUCONFIG_API_KEY",
        GPUCONFIG_ENV_FILE="/dev/null",
        GPUCONFIG_API_KEY_FILE=str(key_file),
    )
    assert result.stdout.strip() == "'s3cret-key'", result.stderr


def test_var_is_owner_only(tmp_path):
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    (var / "gpuconfig.sqlite3").write_text("")
    (var / "gpuconfig.sqlite3").chmod(0o644)
    result = settings_in_child(tmp_path, "s.VAR_DIR", setup=True, GPUCONFIG_ENV_FILE="/dev/null")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    for child in var.iterdir():
        assert stat.S_IMODE(child.stat().st_mode) == 0o600, child


@pytest.mark.django_db
def test_the_first_admin_password_goes_to_an_owner_only_file(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("ensure_admin")
    out = capsys.readouterr().out
    password_file = tmp_path / "admin-password"
    password = password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert str(password_file) in out
    assert password not in out
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(username="admin").check_password(password)


@pytest.mark.django_db
def test_a_manual_scan_with_another_backend_marks_nothing_lost(settings, reference_inventory):
    """A shell without the site's configuration (auto, no simulated file, no GPU here)."""
    versions = ConfigVersion.objects.count()
    settings.GPUCONFIG_GPU_BACKEND = "auto"
    settings.GPUCONFIG_SIMULATED_GPUS = None
    with pytest.raises(CommandError) as error:
        call_command("detect_gpus", json=True)
    assert "no backend but the inventory's is simulated" in str(error.value)
    assert "no GPU was marked lost" in str(error.value)
    assert Gpu.objects.filter(available=True).count() == 2
    assert ConfigVersion.objects.count() == versions


@pytest.mark.django_db
def test_a_manual_scan_against_the_configured_backend_refuses_too(
    settings, reference_inventory, nvidia_smi_dir, monkeypatch
):
    monkeypatch.setenv("PATH", f"{nvidia_smi_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("NVIDIA_SMI_STUB_SCENARIO", "reference")
    with pytest.raises(CommandError, match="the configured one is simulated"):
        call_command("detect_gpus", backend="nvidia-smi", json=True)
    assert Gpu.objects.filter(available=True).count() == 2


@pytest.mark.django_db
def test_a_periodic_scan_still_follows_a_changed_configuration(settings, reference_inventory):
    from gpus.services import gpu_scan_run

    settings.GPUCONFIG_GPU_BACKEND = "auto"
    settings.GPUCONFIG_SIMULATED_GPUS = None
    summary = gpu_scan_run()
    assert summary["error"] is None
    assert len(summary["changes"]["lost"]) == 2


@pytest.mark.django_db
def test_gpuconfig_plan_prints_the_preview(reference_inventory, capsys):
    from assignments.selectors import config_preview

    assert cli.main(["plan", "--strategy", "balanced", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    plan, _ = config_preview(strategy="balanced")
    assert printed["strategy"] == "balanced"
    assert [(p["service"], p["gpu_index"]) for p in printed["placements"]] == [
        (p.service, p.gpu_index) for p in plan.placements
    ]
    assert [w["code"] for w in printed["warnings"]] == [i.code for i in plan.issues]
    assert cli.main(["plan", "--strategy", "nope"]) == 2


def test_the_shipped_units_are_what_deploy_systemd_renders():
    units = systemd_units(
        UnitOptions(
            gpuconfig=Path("/opt/gpuconfig/.venv/bin/gpuconfig"),
            env_file=Path("/etc/gpuconfig/gpuconfig.env"),
            workdir=Path("/var/lib/gpuconfig"),
        )
    )
    shipped = {p.name: p.read_text() for p in (ROOT / "deploy" / "systemd").glob("*.service")}
    assert shipped == units
    assert set(units) == {
        "gpuconfig-web.service",
        "gpuconfig-worker.service",
        "gpuconfig-beat.service",
    }
    for text in units.values():
        assert "User=gpuconfig\n" in text
        assert "Environment=GPUCONFIG_ENV_FILE=/etc/gpuconfig/gpuconfig.env\n" in text
        # However a process stops (a worker that dies on a broker outage too), it comes back.
        assert "\nRestart=always\n" in text and "\nStartLimitIntervalSec=0\n" in text


def test_the_compose_deploy_restarts_every_gpuconfig_process():
    import yaml

    services = yaml.safe_load((ROOT / "deploy" / "compose.yml").read_text())["services"]
    ours = {name: s for name, s in services.items() if name.startswith("gpuconfig-")}
    assert {"gpuconfig-web", "gpuconfig-worker", "gpuconfig-beat"} <= set(ours)
    assert {name: s.get("restart") for name, s in ours.items()} == dict.fromkeys(
        ours, "unless-stopped"
    )


@pytest.mark.django_db
def test_gpuconfig_status_reports_each_service_even_without_an_engine(
    reference_inventory, monkeypatch, capsys
):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/gpuconfig-test.sock")
    assert cli.main(["status", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run"] is None
    assert printed["in_progress"] is False
    from assignments.selectors import service_list

    assert [s["name"] for s in printed["services"]] == [s.name for s in service_list()]
    assert {s["status"] for s in printed["services"]} == {"unknown"}


def test_importing_the_settings_touches_no_folder(tmp_path):
    """Settings only read: var/ (and the embedded broker's folders) are made when the apps load."""
    result = settings_in_child(
        tmp_path,
        "s.VAR_DIR",
        GPUCONFIG_ENV_FILE="/dev/null",
        DJANGO_SECRET_KEY="k" * 50,
        GPUCONFIG_EMBEDDED="1",
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "var").exists()
    loaded = settings_in_child(
        tmp_path,
        "sorted(p.name for p in (s.VAR_DIR / 'broker').iterdir())",
        setup=True,
        GPUCONFIG_ENV_FILE="/dev/null",
        DJANGO_SECRET_KEY="k" * 50,
        GPUCONFIG_EMBEDDED="1",
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "['control', 'out', 'processed']"


@pytest.mark.parametrize(
    "name, value",
    [
        ("GPUCONFIG_HEALTH_GRACE", "three"),
        ("GPUCONFIG_COMPOSE_TIMEOUT", "nan"),
        ("GPUCONFIG_REDIS_TIMEOUT", "2s"),
        ("GPUCONFIG_SCAN_INTERVAL", "30.5"),
        ("GPUCONFIG_LOG_FORMAT", "xml"),
    ],
)
def test_a_malformed_setting_names_its_variable(tmp_path, name, value):
    """A bad value stops the start with ImproperlyConfigured naming the variable, no traceback
    from deep inside a float() call."""
    result = settings_in_child(tmp_path, "1", GPUCONFIG_ENV_FILE="/dev/null", **{name: value})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured: " + name), last


def test_the_redis_cache_keeps_one_timeout_for_connect_and_reads(tmp_path):
    result = settings_in_child(
        tmp_path,
        "s.CACHES['default']['OPTIONS']",
        GPUCONFIG_ENV_FILE="/dev/null",
        GPUCONFIG_REDIS_TIMEOUT="4.5",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'socket_connect_timeout': 4.5, 'socket_timeout': 4.5}"


def test_each_setting_is_defined_once_and_documented():
    """One definition per name in settings.py, and every GPUCONFIG_* setting in the README."""
    import ast
    import re

    tree = ast.parse((ROOT / "gpuconfig_site" / "settings.py").read_text())
    names = [
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id.isupper()
    ]
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert repeated == []
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`(GPUCONFIG_[A-Z0-9_]+)`", readme))
    internal = {"GPUCONFIG_EMBEDDED"}  # written by `make run` itself, never by a user
    missing = sorted(n for n in set(names) if n.startswith("GPUCONFIG_") and n not in documented)
    assert sorted(set(missing) - internal) == []
