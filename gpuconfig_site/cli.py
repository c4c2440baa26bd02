"""The ``gpuconfig`` command: run the processes, and operate the box from a shell.

Every subcommand reads the same configuration as the site (``gpuconfig.env``, then the
environment), so a shell sees the backend, database and Redis the running site uses.

The operating subcommands (detect, plan, apply, status, check, deploy) are Django management
commands in the app that owns their concern; ``gpuconfig <name>`` runs the one named in
``COMMANDS`` with the same options (``manage.py <command>`` runs it too). The processes (serve,
worker, beat) stay here: each replaces this process with gunicorn or Celery, so that a
supervisor's signals reach the server itself, and needs no app loaded to do so.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import django
from django.conf import settings
from django.core.management import (
    CommandError,
    call_command,
    execute_from_command_line,
    get_commands,
    load_command_class,
)

from gpuconfig_site.hosts import default_host_name, host_scope

# gunicorn's processes and threads for `gpuconfig serve` (and `make bench`, which measures it).
SERVE_WORKERS = 2
SERVE_THREADS = 4

# `gpuconfig <name>`: (the management command it runs, its one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "detect": ("detect_gpus", "scan the GPUs now and print the inventory"),
    "plan": ("plan", "show what a strategy would do (nothing saved)"),
    "apply": ("apply", "apply the saved configuration (recreate what changed)"),
    "status": ("status", "the last apply and each service's container"),
    "check": ("check_setup", "check config, database, Redis, engine, NVML, compose"),
    "deploy": ("deploy", "render service definitions (deploy systemd)"),
    "agent": ("agent", "run this GPU host's agent (its host's queue only, no database)"),
    "host": ("host", "register a GPU host (host add) or list the hosts (host list)"),
}
# The commands that work on one GPU host take ``--host <name>`` (default: the default host);
# those that make the host's agent act refuse at once, naming it, when it is offline.
HOST_COMMANDS = {"detect", "plan", "apply", "status"}
ACTING_COMMANDS = {"detect", "apply"}


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpuconfig_site.settings")
    django.setup()


def _exec_python_module(module: str, args: list[str]) -> None:
    """Replace this process, so a supervisor's signals reach the server itself."""
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


def run_command(name: str, argv: list[str]) -> int:
    """Run ``gpuconfig name argv...``: its management command, options parsed as on a command
    line (``--help`` and a wrong option print the usage of ``gpuconfig name``). A refusal is one
    line on stderr, ``gpuconfig name: reason``, and the command's exit status."""
    _django()
    command_name = COMMANDS[name][0]
    command = load_command_class(get_commands()[command_name], command_name)
    # As BaseCommand.run_from_argv does: argparse errors exit with the usage, not a CommandError.
    command._called_from_command_line = True
    parser = command.create_parser("gpuconfig", name)
    if name in HOST_COMMANDS:
        parser.add_argument(
            "--host", default=None, help="the GPU host to work on (default: the default host)"
        )
    options = vars(parser.parse_args(argv))
    args = options.pop("args", ())
    host = options.pop("host", None)
    # No system checks, as with call_command: the site's checks are `manage.py check`'s job.
    options["skip_checks"] = True
    try:
        if name in HOST_COMMANDS:
            host = _host_checked(host or default_host_name(), acting=name in ACTING_COMMANDS)
        with host_scope(host):
            command.execute(*args, **options)
    except CommandError as exc:
        print(f"gpuconfig {name}: {exc}", file=sys.stderr)
        return exc.returncode
    return 0


def _host_checked(name: str, *, acting: bool) -> str:
    """``--host``'s value once known to be registered (and online, for an action); a
    ``CommandError`` naming it otherwise."""
    # Imported here: the apps load in _django(), after this module.
    from fleet.selectors import host_for_request
    from fleet.services import HostUnreachable, host_acting_check

    if name != settings.GPUCONFIG_HOST_NAME and host_for_request(name) is None:
        raise CommandError(f"unknown host {name!r} (gpuconfig host list shows them)")
    if acting:
        with host_scope(name):
            try:
                host_acting_check()
            except HostUnreachable as exc:
                raise CommandError(exc.message) from exc
    return name


# --- processes -----------------------------------------------------------------------------


def cmd_serve(args) -> int:
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
    schedule = Path(settings.VAR_DIR) / "celerybeat-schedule"
    _exec_python_module(
        "celery",
        ["-A", "gpuconfig_site", "beat", "--loglevel", "INFO", "--schedule", str(schedule)],
    )
    return 0


def cmd_manage(args) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpuconfig_site.settings")
    execute_from_command_line(["gpuconfig manage", *args.args])
    return 0


def cmd_migrate(args) -> int:
    _django()
    call_command("migrate", interactive=False, verbosity=1)
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
    # Listed for --help; main() hands them to their management command before parsing.
    for name, (_command, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    # var/ and everything gpuconfig creates there is the owner's only.
    os.umask(0o077)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return run_command(argv[0], argv[1:])
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
