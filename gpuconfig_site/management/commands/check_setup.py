"""``gpuconfig check``: one PASS/FAIL line per part the box needs (config, database, Redis,
engine, NVML, pids, compose, lint); the exit status is 1 when any failed.

Named ``check_setup`` because ``manage.py check`` is Django's own system check.
"""

import sys

from django.core.management.base import BaseCommand

from ops.health import setup_checks


class Command(BaseCommand):
    help = "Check config, database, Redis, engine, NVML, compose."

    def handle(self, *args, **options):
        checks = setup_checks()
        for check in checks:
            self.stdout.write(f"{check.label} {check.name}: {check.detail}")
        if any(c.ok is False for c in checks):
            # As `migrate --check` does: each failure has its line, the status says one failed.
            sys.exit(1)
