"""``gpuconfig plan``: where a strategy would place each service (nothing saved)."""

import json

from django.core.management.base import BaseCommand, CommandError

from assignments.models import GpuConfig
from assignments.planner import UnknownStrategy
from assignments.selectors import config_preview


class Command(BaseCommand):
    help = "Show what a strategy would do (nothing saved)."

    def add_arguments(self, parser):
        parser.add_argument("--strategy", help="default: the saved strategy")
        parser.add_argument("--json", action="store_true", help="print the plan as JSON")

    def handle(self, *args, **options):
        strategy = options["strategy"] or GpuConfig.load().strategy
        try:
            plan, _data = config_preview(strategy=strategy)
        except UnknownStrategy as exc:
            raise CommandError(str(exc), returncode=2) from exc
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "strategy": plan.strategy,
                        "placements": [
                            {
                                "service": p.service,
                                "gpu_index": p.gpu_index,
                                "budget_gb": p.budget_gb,
                            }
                            for p in plan.placements
                        ],
                        "warnings": [{"code": i.code, "message": i.message} for i in plan.issues],
                    },
                    indent=2,
                )
            )
            return
        self.stdout.write(f"Strategy {plan.strategy} (preview, nothing saved)")
        for p in plan.placements:
            where = "not placed" if p.gpu_index is None else f"GPU {p.gpu_index}"
            budget = f" (budget {p.budget_gb} GB)" if p.budget_gb is not None else ""
            self.stdout.write(f"  {p.service}: {where}{budget}")
        for issue in plan.issues:
            self.stdout.write(f"  warning [{issue.code}]: {issue.message}")
