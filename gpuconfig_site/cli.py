"""The ``gpuconfig`` command: run the processes, and operate the box from a shell.

Every subcommand reads the same configuration as the site (``gpuconfig.env``, then the
environment), so a shell sees the backend, database and Redis the running site uses.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import sys
import time
from pathlib import Path

# gunicorn's processes and threads for `gpuconfig serve` (and `make bench`, which measures it).
SERVE_WORKERS = 2
SERVE_THREADS = 4


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpuconfig_site.settings")
    import django

    django.setup()


def _exec_python_module(module: str, args: list[str]) -> None:
    """Replace this process, so a supervisor's signals reach the server itself."""
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


# --- processes -----------------------------------------------------------------------------


def cmd_serve(args) -> int:
    from django.conf import settings

    _exec_python_module(
        "gunicorn",
        [
            "gpuconfig_site.wsgi",
            "--bind",
            args.bind or settings.GPUCONFIG_BIND,
            "--workers",
            str(args.workers),
            "--threads",
            str(SERVE_THREADS),
            "--access-logfile",
            "-",
            "--access-logformat",
            '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s',
            "--logger-class",
            "ops.logs.QuietAccessLogger",
            "--log-level",
            "warning",
        ],
    )
    return 0  # not reached


def cmd_worker(args) -> int:
    _exec_python_module(
        "celery",
        [
            "-A",
            "gpuconfig_site",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(args.concurrency),
        ],
    )
    return 0


def cmd_beat(args) -> int:
    from django.conf import settings

    schedule = Path(settings.VAR_DIR) / "celerybeat-schedule"
    _exec_python_module(
        "celery",
        ["-A", "gpuconfig_site", "beat", "--loglevel", "INFO", "--schedule", str(schedule)],
    )
    return 0


def cmd_manage(args) -> int:
    from django.core.management import execute_from_command_line

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpuconfig_site.settings")
    execute_from_command_line(["gpuconfig manage", *args.args])
    return 0


def cmd_migrate(args) -> int:
    _django()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=1)
    return 0


# --- operating -----------------------------------------------------------------------------


def cmd_detect(args) -> int:
    _django()
    from django.core.management import CommandError, call_command

    try:
        call_command(
            "detect_gpus", json=args.json, **({"backend": args.backend} if args.backend else {})
        )
    except CommandError as exc:
        print(f"gpuconfig detect: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_plan(args) -> int:
    _django()
    from assignments.models import GpuConfig
    from assignments.planner import UnknownStrategy
    from assignments.selectors import config_preview

    strategy = args.strategy or GpuConfig.load().strategy
    try:
        plan, _data = config_preview(strategy=strategy)
    except UnknownStrategy as exc:
        print(f"gpuconfig plan: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {
                    "strategy": plan.strategy,
                    "placements": [
                        {"service": p.service, "gpu_index": p.gpu_index, "budget_gb": p.budget_gb}
                        for p in plan.placements
                    ],
                    "warnings": [{"code": i.code, "message": i.message} for i in plan.issues],
                },
                indent=2,
            )
        )
        return 0
    print(f"Strategy {plan.strategy} (preview, nothing saved)")
    for p in plan.placements:
        where = "not placed" if p.gpu_index is None else f"GPU {p.gpu_index}"
        budget = f" (budget {p.budget_gb} GB)" if p.budget_gb is not None else ""
        print(f"  {p.service}: {where}{budget}")
    for issue in plan.issues:
        print(f"  warning [{issue.code}]: {issue.message}")
    return 0


def cmd_apply(args) -> int:
    _django()
    from applies.models import ApplyRun
    from applies.services import ApplyBusy, apply_start
    from applies.tasks import apply_config_enqueue
    from gpuconfig_site.errors import ApplicationError

    try:
        run, pending = apply_start(actor="gpuconfig apply")
        apply_config_enqueue(run_id=run.pk)
    except ApplyBusy as exc:
        print(f"gpuconfig apply: {exc}", file=sys.stderr)
        return 2
    except ApplicationError as exc:
        # engine_unavailable / engine_refused: the message says where the engine was looked for.
        print(f"gpuconfig apply: {exc.message}", file=sys.stderr)
        return 1
    print(f"Apply {run.operation_id}: restarting {', '.join(pending) or 'nothing'}")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_finished:
            break
        time.sleep(0.5)
    else:
        print(f"Still {run.status} after {args.timeout} s (is the worker running?)")
        return 1
    for service, result in sorted(run.results.items()):
        print(f"  {service}: {result.get('outcome')} {result.get('message', '')}".rstrip())
    print(f"Apply {run.operation_id}: {run.status}{': ' + run.error if run.error else ''}")
    return 0 if run.status == ApplyRun.Status.SUCCEEDED else 1


def cmd_status(args) -> int:
    _django()
    from applies.live import live_refresh
    from applies.selectors import apply_status

    data = apply_status(snapshot=live_refresh())
    run = data["run"]
    if args.json:
        data = {
            **data,
            "run": None
            if run is None
            else {"operation_id": str(run.operation_id), "status": run.status, "error": run.error},
        }
        print(json.dumps(data, indent=2, default=str))
        return 0
    if run is None:
        print("No apply has run yet.")
    else:
        running = " (in progress)" if data["in_progress"] else ""
        print(f"Last apply {run.operation_id}: {run.status}{running}")
        for entry in data["service_statuses"]:
            print(f"  {entry['service']}: {entry['status']} {entry['message']}".rstrip())
    for svc in data["services"]:
        gpu = "-" if svc["gpu_index"] is None else svc["gpu_index"]
        line = f"{svc['name']}: {svc['status']} (health {svc['health'] or 'none'}), GPU {gpu}"
        if svc["pending_apply"]:
            saved = svc["assigned_gpu_index"]
            line += f" (saved: GPU {'-' if saved is None else saved}, waiting for Apply)"
        elif svc["gpu_index"] is None and svc.get("assigned_gpu_index") is not None:
            # No container seen (or no engine): where it runs is unknown, the saved GPU is not.
            line += f" (saved: GPU {svc['assigned_gpu_index']})"
        print(line)
    return 0


def cmd_check(args) -> int:
    _django()
    from ops.health import setup_checks

    checks = setup_checks()
    for check in checks:
        print(f"{check.label} {check.name}: {check.detail}")
    return 1 if any(c.ok is False for c in checks) else 0


def cmd_deploy(args) -> int:
    from django.conf import settings

    from gpuconfig_site.deploy import UnitOptions, systemd_units

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpuconfig_site.settings")
    # Under sudo the invoking user is the one who typed it, not root.
    user = args.user or os.environ.get("SUDO_USER") or getpass.getuser()
    # The account must exist on the box: say which one the units name, and how to change it.
    print(
        f"gpuconfig deploy: the units run as user {user!r}, group {args.group or user!r} "
        "(--user/--group to choose another; the account must exist).",
        file=sys.stderr,
    )
    gpuconfig = Path(args.gpuconfig or shutil.which("gpuconfig") or sys.argv[0]).absolute()
    units = systemd_units(
        UnitOptions(
            gpuconfig=gpuconfig,
            env_file=Path(args.env_file or settings.GPUCONFIG_ENV_FILE).absolute(),
            workdir=Path(args.workdir or settings.BASE_DIR).absolute(),
            user=user,
            group=args.group or user,
            engine_group=args.engine_group,
        )
    )
    if args.output is None:
        for name, text in units.items():
            print(f"# {name}\n{text}")
        return 0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (out / name).write_text(text)
        (out / name).chmod(0o644)
        print(out / name)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpuconfig", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the web site (gunicorn)")
    s.add_argument("--bind", help="address:port (default GPUCONFIG_BIND)")
    s.add_argument("--workers", type=int, default=SERVE_WORKERS)
    s.set_defaults(func=cmd_serve)
    s = sub.add_parser("worker", help="run a Celery worker (scans, applies)")
    s.add_argument("--concurrency", type=int, default=2)
    s.set_defaults(func=cmd_worker)
    sub.add_parser("beat", help="run Celery beat (periodic scans)").set_defaults(func=cmd_beat)
    sub.add_parser("migrate", help="create or update the database").set_defaults(func=cmd_migrate)
    s = sub.add_parser("manage", help="any manage.py command")
    s.add_argument("args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_manage)

    s = sub.add_parser("detect", help="scan the GPUs now and print the inventory")
    s.add_argument("--json", action="store_true")
    s.add_argument("--backend", help="scan with this backend instead of the configured one")
    s.set_defaults(func=cmd_detect)
    s = sub.add_parser("plan", help="show what a strategy would do (nothing saved)")
    s.add_argument("--strategy", help="default: the saved strategy")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_plan)
    s = sub.add_parser("apply", help="apply the saved configuration (recreate what changed)")
    s.add_argument("--wait", action="store_true", help="wait for the outcome")
    s.add_argument("--timeout", type=float, default=1800.0)
    s.set_defaults(func=cmd_apply)
    s = sub.add_parser("status", help="the last apply and each service's container")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    sub.add_parser(
        "check", help="check config, database, Redis, engine, NVML, compose"
    ).set_defaults(func=cmd_check)

    s = sub.add_parser("deploy", help="render service definitions")
    deploy = s.add_subparsers(dest="target", required=True, metavar="TARGET")
    s = deploy.add_parser("systemd", help="one .service unit per process")
    s.add_argument("--output", help="write the units into this folder (default: print them)")
    s.add_argument(
        "--user",
        help="the account the units run as (default: the invoking user, SUDO_USER under sudo)",
    )
    s.add_argument("--group", help="default: the user's name")
    s.add_argument("--engine-group", default="docker", help="group owning the engine socket")
    s.add_argument("--env-file", help="default: the gpuconfig.env in use")
    s.add_argument("--workdir", help="default: the project folder")
    s.add_argument("--gpuconfig", help="path of the gpuconfig command (default: this one)")
    s.set_defaults(func=cmd_deploy)
    return p


def main(argv: list[str] | None = None) -> int:
    # var/ and everything gpuconfig creates there is the owner's only.
    os.umask(0o077)
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
