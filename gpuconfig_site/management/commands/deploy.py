"""``gpuconfig deploy systemd``: render one systemd unit per process, printed or written."""

import getpass
import os
import shutil
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from gpuconfig_site.deploy import ROLES, UnitOptions, systemd_units


class Command(BaseCommand):
    help = "Render service definitions (systemd: one .service unit per process)."

    def add_arguments(self, parser):
        parser.add_argument("target", choices=["systemd"], help="one .service unit per process")
        parser.add_argument(
            "--role",
            choices=sorted(ROLES),
            default="all",
            help="all: web, worker and beat (a box, or a fleet's centre); agent: a GPU host's",
        )
        parser.add_argument(
            "--output", help="write the units into this folder (default: print them)"
        )
        parser.add_argument(
            "--user",
            help="the account the units run as (default: the invoking user, SUDO_USER under sudo)",
        )
        parser.add_argument("--group", help="default: the user's name")
        parser.add_argument(
            "--engine-group", default="docker", help="group owning the engine socket"
        )
        parser.add_argument("--env-file", help="default: the gpuconfig.env in use")
        parser.add_argument("--workdir", help="default: the project folder")
        parser.add_argument("--gpuconfig", help="path of the gpuconfig command (default: this one)")

    def handle(self, *args, **options):
        # Under sudo the invoking user is the one who typed it, not root.
        user = options["user"] or os.environ.get("SUDO_USER") or getpass.getuser()
        group = options["group"] or user
        # The account must exist on the box: say which one the units name, and how to change it.
        self.stderr.write(
            f"gpuconfig deploy: the units run as user {user!r}, group {group!r} "
            "(--user/--group to choose another; the account must exist).",
            style_func=str,
        )
        gpuconfig = options["gpuconfig"] or shutil.which("gpuconfig") or sys.argv[0]
        units = systemd_units(
            UnitOptions(
                gpuconfig=Path(gpuconfig).absolute(),
                env_file=Path(options["env_file"] or settings.GPUCONFIG_ENV_FILE).absolute(),
                workdir=Path(options["workdir"] or settings.BASE_DIR).absolute(),
                user=user,
                group=group,
                engine_group=options["engine_group"],
            ),
            role=options["role"],
        )
        if options["output"] is None:
            for name, text in units.items():
                # A blank line after each unit, so the units read apart.
                self.stdout.write(f"# {name}\n{text}\n")
            return
        out = Path(options["output"])
        out.mkdir(parents=True, exist_ok=True)
        for name, text in units.items():
            # Atomically: systemd (or a reader) never sees half a unit.
            partial = out / f".{name}.partial"
            partial.write_text(text)
            partial.chmod(0o644)
            os.replace(partial, out / name)
            self.stdout.write(str(out / name))
