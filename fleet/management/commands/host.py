"""``gpuconfig host add|list``: register a GPU host and print what lets its agent in."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from kombu import Connection

from fleet.identity import BrokerIdentity
from fleet.models import Host
from fleet.routing import rabbitmq_commands, topology_declare
from fleet.services import HostInvalid, host_register


class Command(BaseCommand):
    help = "Register a GPU host (add) or list the hosts with their state (list)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="register a GPU host")
        add.add_argument("name", help="the host's name (its agent's GPUCONFIG_HOST_NAME)")
        add.add_argument("--display-name", default="")
        add.add_argument("--broker-user", default="", help="default: gpuconfig-agent-<name>")
        add.add_argument("--vhost", default="gpuconfig", help="the RabbitMQ vhost of the fleet")
        sub.add_parser("list", help="the hosts and their state")

    def handle(self, *args, action: str, **options):
        if action == "add":
            return self._add(options)
        return self._list()

    def _add(self, options) -> None:
        try:
            host = host_register(
                name=options["name"],
                display_name=options["display_name"],
                broker_user=options["broker_user"],
            )
        except HostInvalid as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Registered host {host.name} (queue {host.queue}).")
        if BrokerIdentity.from_url(settings.CELERY_BROKER_URL).authenticates:
            # The centre's broker account declares the host's queue: its agent may not.
            with Connection(settings.CELERY_BROKER_URL, connect_timeout=10) as connection:
                topology_declare(connection, [host.name])
            self.stdout.write(f"Declared {host.queue} on the broker.")
        self.stdout.write("On the RabbitMQ machine, let its agent in (read-only to the rest):")
        for line in rabbitmq_commands(
            host.name,
            vhost=options["vhost"],
            user=host.broker_user,
            password_file="agent-password.txt",
        ):
            self.stdout.write(f"  {line}")

    def _list(self) -> None:
        now = timezone.now()
        for host in Host.objects.all():
            state = host.state_at(now, settings.GPUCONFIG_HEARTBEAT_INTERVAL)
            seen = host.last_heartbeat.isoformat() if host.last_heartbeat else "never"
            self.stdout.write(f"{host.name}\t{state.value}\tlast seen {seen}")
