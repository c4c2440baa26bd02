"""The site's own app config: the one place where starting gpuconfig touches the disk.

Settings only read (the environment, ``gpuconfig.env``, the per-installation secret key); the
folders a process needs are prepared here, once the apps load, by every entry point alike
(web, worker, beat, ``manage.py``, the ``gpuconfig`` command, the tests).
"""

from __future__ import annotations

from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


def private_dir_prepare(path: Path) -> None:
    """var/ holds the database, password hashes, sessions and keys: owner-only (0700, 0600)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
        for child in path.iterdir():
            if child.is_file() and child.stat().st_mode & 0o077:
                child.chmod(0o600)
    except PermissionError:  # a var/ owned by another user (a deployment): leave it as is
        pass


def broker_dirs_prepare(options: dict) -> None:
    """The embedded (filesystem) broker's folders, when that broker is in use."""
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


class SiteConfig(AppConfig):
    """Prepares the private var/ folder (and the embedded broker's folders) at start."""

    name = "gpuconfig_site"
    label = "gpuconfig_site"
    verbose_name = "gpuconfig site"

    def ready(self) -> None:
        private_dir_prepare(Path(settings.VAR_DIR))
        if settings.CELERY_BROKER_URL.startswith("filesystem://"):
            broker_dirs_prepare(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}))
