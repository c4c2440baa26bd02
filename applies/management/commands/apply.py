"""Applies room. ``gpuconfig apply``: start an apply of the saved configuration, and optionally
follow it.

The worker carries the apply out; this command starts it (as the API's POST does) and, with
``--wait``, polls the run's row until it finishes. The exit status is the run's outcome: 0 when
it succeeded, 1 otherwise (the lines above say why), 2 while another apply runs.
"""

import sys
import time

from django.core.management.base import BaseCommand, CommandError

from applies.models import ApplyRun
from applies.services import ApplyBusy, apply_start
from applies.tasks import apply_config_enqueue
from gpuconfig_site.errors import ApplicationError

POLL_S = 0.5


class Command(BaseCommand):
    help = "Apply the saved configuration (recreate what changed)."

    def add_arguments(self, parser):
        parser.add_argument("--wait", action="store_true", help="wait for the outcome")
        parser.add_argument(
            "--timeout", type=float, default=1800.0, help="seconds --wait waits (default 1800)"
        )

    def handle(self, *args, **options):
        try:
            run, pending = apply_start(actor="gpuconfig apply")
            apply_config_enqueue(run_id=run.pk)
        except ApplyBusy as exc:
            raise CommandError(exc.message, returncode=2) from exc
        except ApplicationError as exc:
            # engine_unavailable / engine_refused: the message says where the engine was looked for.
            raise CommandError(exc.message, returncode=1) from exc
        self.stdout.write(f"Apply {run.operation_id}: restarting {', '.join(pending) or 'nothing'}")
        if not options["wait"]:
            return
        timeout = options["timeout"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.is_finished:
                break
            time.sleep(POLL_S)
        else:
            self.stdout.write(f"Still {run.status} after {timeout} s (is the worker running?)")
            sys.exit(1)
        for service, result in sorted(run.results.items()):
            line = f"  {service}: {result.get('outcome')} {result.get('message', '')}"
            self.stdout.write(line.rstrip())
        error = f": {run.error}" if run.error else ""
        self.stdout.write(f"Apply {run.operation_id}: {run.status}{error}")
        if run.status != ApplyRun.Status.SUCCEEDED:
            # As `migrate --check` does: the output said everything, the status says it failed.
            sys.exit(1)
