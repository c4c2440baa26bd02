import json

from django.core.management.base import BaseCommand, CommandError

from gpus.api.serializers import GpuSerializer
from gpus.selectors import NO_GPUS_DETAIL, TROUBLESHOOTING, gpu_list
from gpus.services import gpu_scan_run
from gpus.units import MB_PER_GB


def _gb(mb: int | None) -> str:
    return "?" if mb is None else f"{mb / MB_PER_GB:.1f}"


class Command(BaseCommand):
    help = "Run one GPU scan now, update the inventory, and print it."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the inventory as JSON.")
        parser.add_argument("--backend", help="Use this backend instead of GPUCONFIG_GPU_BACKEND.")

    def handle(self, *args, **options):
        summary = gpu_scan_run(backend=options.get("backend"), manual=True)
        if summary.get("error"):
            raise CommandError(summary["error"])
        gpus = GpuSerializer(gpu_list(), many=True).data
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "backend": summary.get("backend"),
                        "notes": summary.get("notes", []),
                        "gpus": gpus,
                    },
                    indent=2,
                )
            )
            return
        self.stdout.write(f"Backend: {summary.get('backend') or 'none'}")
        for note in summary.get("notes", []):
            self.stdout.write(f"  note: {note}")
        if not gpus:
            self.stdout.write(NO_GPUS_DETAIL)
            for step in TROUBLESHOOTING:
                self.stdout.write(f"  - {step}")
            return
        for g in gpus:
            state = "" if g["available"] else "  (unavailable)"
            used, total = _gb(g["vram_used_mb"]), _gb(g["vram_total_mb"])
            cc = g["compute_capability"] or "?"
            self.stdout.write(
                f"GPU {g['index']}: {g['name']}  {used}/{total} GB used  cc {cc}"
                f"  {g['uuid']}{state}"
            )
