"""Applies room. ``gpuconfig status``: the last apply, and each service's container beside its
saved GPU."""

import json

from django.core.management.base import BaseCommand

from applies.live import live_refresh
from applies.selectors import apply_status


class Command(BaseCommand):
    help = "The last apply and each service's container."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the status as JSON")

    def handle(self, *args, **options):
        data = apply_status(snapshot=live_refresh())
        run = data["run"]
        if options["json"]:
            data = {
                **data,
                "run": None
                if run is None
                else {
                    "operation_id": str(run.operation_id),
                    "status": run.status,
                    "error": run.error,
                },
            }
            self.stdout.write(json.dumps(data, indent=2, default=str))
            return
        if run is None:
            self.stdout.write("No apply has run yet.")
        else:
            running = " (in progress)" if data["in_progress"] else ""
            self.stdout.write(f"Last apply {run.operation_id}: {run.status}{running}")
            for entry in data["service_statuses"]:
                self.stdout.write(
                    f"  {entry['service']}: {entry['status']} {entry['message']}".rstrip()
                )
        for svc in data["services"]:
            self.stdout.write(service_line(svc))


def service_line(svc: dict) -> str:
    """One service: where it runs, its health, and the saved GPU when that says more."""
    gpu = "-" if svc["gpu_index"] is None else svc["gpu_index"]
    line = f"{svc['name']}: {svc['status']} (health {svc['health'] or 'none'}), GPU {gpu}"
    if svc["pending_apply"]:
        saved = svc["assigned_gpu_index"]
        line += f" (saved: GPU {'-' if saved is None else saved}, waiting for Apply)"
    elif svc["gpu_index"] is None and svc.get("assigned_gpu_index") is not None:
        # No container seen (or no engine): where it runs is unknown, the saved GPU is not.
        line += f" (saved: GPU {svc['assigned_gpu_index']})"
    return line
