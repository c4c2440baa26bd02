"""Service units for running gpuconfig at boot: one systemd unit per process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNIT = """\
[Unit]
Description=gpuconfig {title}
After=network-online.target redis-server.service postgresql.service docker.service
Wants=network-online.target
# Never give up restarting: a worker that stops (whatever the exit code) must come back.
StartLimitIntervalSec=0

[Service]
Type=exec
User={user}
Group={group}
{groups}Environment=GPUCONFIG_ENV_FILE={env_file}
WorkingDirectory={workdir}
{pre}ExecStart={gpuconfig} {command}
Restart=always
RestartSec=5
{stop}UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full
ProtectKernelTunables=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes

[Install]
WantedBy=multi-user.target
"""

PROCESSES = {
    # name: (title, command, ExecStartPre, stop settings)
    "web": ("web (gunicorn)", "serve", "migrate", ""),
    # A warm shutdown lets a running apply finish its recreate (health-gated) before exiting.
    "worker": ("worker (Celery)", "worker", None, "KillMode=mixed\nTimeoutStopSec=600\n"),
    "beat": ("scheduler (Celery beat)", "beat", None, ""),
}


@dataclass(frozen=True)
class UnitOptions:
    """The paths and account the units run with."""

    gpuconfig: Path  # the installed `gpuconfig` command
    env_file: Path
    workdir: Path
    user: str = "gpuconfig"
    group: str = "gpuconfig"
    engine_group: str = "docker"  # may use the engine's socket; empty for none


def systemd_units(options: UnitOptions) -> dict[str, str]:
    """``{"gpuconfig-web.service": text, ...}`` for the web, worker and beat processes."""
    units = {}
    for name, (title, command, pre, stop) in PROCESSES.items():
        units[f"gpuconfig-{name}.service"] = UNIT.format(
            title=title,
            user=options.user,
            group=options.group,
            groups=(
                f"SupplementaryGroups={options.engine_group}\n" if options.engine_group else ""
            ),
            env_file=options.env_file,
            workdir=options.workdir,
            gpuconfig=options.gpuconfig,
            command=command,
            pre=f"ExecStartPre={options.gpuconfig} {pre}\n" if pre else "",
            stop=stop,
        )
    return units
