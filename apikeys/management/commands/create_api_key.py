"""``manage.py create_api_key NAME [--file PATH]``: a named API key, printed or written to a
file readable only by its owner (as the first-run password is)."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand

from apikeys.models import ApiKey
from apikeys.services import api_key_create


class Command(BaseCommand):
    help = "Create a named API key for the X-API-Key header."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--file", help="write the key to this file (mode 0600) instead of printing it"
        )
        parser.add_argument(
            "--if-none",
            action="store_true",
            help="do nothing when a usable key of this name exists (first run)",
        )

    def handle(self, *args, name, file=None, if_none=False, **options):
        if if_none and ApiKey.objects.get_usable_keys().filter(name=name).exists():
            self.stdout.write(f"An API key named {name!r} exists; none created.")
            return
        _row, key = api_key_create(name=name)
        if not file:
            self.stdout.write(key)
            return
        path = Path(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        os.replace(tmp, path)
        self.stdout.write(f"API key {name!r} written to {path}")
