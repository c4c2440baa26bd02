"""Service units for running gpuconfig at boot: one systemd unit per process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNIT = """\
[Unit]
Description=gpuconfig {title}
After={after}
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

CENTRE_AFTER = "network-online.target redis-server.service postgresql.service docker.service"
# An agent needs its engine and the network (to reach the broker); no database, no local Redis.
AGENT_AFTER = "network-online.target docker.service podman.socket"
WARM_STOP = "KillMode=mixed\nTimeoutStopSec=600\n"

PROCESSES = {
    # name: (title, command, ExecStartPre, stop settings)
    "web": ("web (gunicorn)", "serve", "migrate", ""),
    # A warm shutdown lets a running apply finish its recreate (health-gated) before exiting.
    "worker": ("worker (Celery)", "worker", None, WARM_STOP),
    "beat": ("scheduler (Celery beat)", "beat", None, ""),
}
# A GPU host of a fleet runs its agent only (the centre runs the three above).
AGENT_PROCESSES = {
    "agent": ("agent of this GPU host (Celery, its host's queue)", "agent", None, WARM_STOP),
}
ROLES = {"all": (PROCESSES, CENTRE_AFTER), "agent": (AGENT_PROCESSES, AGENT_AFTER)}


@dataclass(frozen=True)
class UnitOptions:
    """The paths and account the units run with."""

    gpuconfig: Path  # the installed `gpuconfig` command
    env_file: Path
    workdir: Path
    user: str = "gpuconfig"
    group: str = "gpuconfig"
    engine_group: str = "docker"  # may use the engine's socket; empty for none


def systemd_units(options: UnitOptions, *, role: str = "all") -> dict[str, str]:
    """``{"gpuconfig-web.service": text, ...}``: for the web, worker and beat processes (role
    ``all``), or for a fleet GPU host's agent (role ``agent``)."""
    processes, after = ROLES[role]
    units = {}
    for name, (title, command, pre, stop) in processes.items():
        units[f"gpuconfig-{name}.service"] = UNIT.format(
            title=title,
            after=after,
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
