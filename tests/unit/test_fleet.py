"""The fleet's rules without a broker: who may speak for a host, what a heartbeat must hold,
when a host is online, and registering hosts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from fleet.identity import BrokerIdentity, SenderRefused, check_sender
from fleet.messages import Heartbeat, MessageInvalid
from fleet.models import Host, HostState
from fleet.routing import agent_permissions, rabbitmq_commands
from fleet.services import heartbeat_receive, host_register

RABBIT = BrokerIdentity.from_url("amqp://central:pw@rabbit:5672/gpuconfig")
REDIS = BrokerIdentity.from_url("redis://127.0.0.1:6379/0")


def test_rabbitmq_authenticates_publishers_and_redis_does_not():
    assert BrokerIdentity(authenticates=True, own_user="central") == RABBIT
    assert BrokerIdentity(authenticates=False, own_user="") == REDIS
    assert BrokerIdentity.from_url("amqp://rabbit//").own_user == "guest"


def test_a_host_s_own_broker_user_speaks_for_it():
    check_sender(
        claimed_host="b",
        host_broker_user="gpuconfig-agent-b",
        local_host="centre",
        sender="gpuconfig-agent-b",
        broker=RABBIT,
    )


@pytest.mark.parametrize(
    ("claimed", "registered_user", "sender", "reason"),
    [
        ("b", "gpuconfig-agent-b", "gpuconfig-agent-a", "broker user 'gpuconfig-agent-a' may not"),
        ("b", "gpuconfig-agent-b", None, "carries no broker user"),
        ("b", None, "gpuconfig-agent-b", "no host named 'b' is registered"),
        ("centre", "", "gpuconfig-agent-a", "may not speak for host 'centre'"),
    ],
)
def test_anyone_else_is_refused_with_the_reason(claimed, registered_user, sender, reason):
    with pytest.raises(SenderRefused, match=reason):
        check_sender(
            claimed_host=claimed,
            host_broker_user=registered_user,
            local_host="centre",
            sender=sender,
            broker=RABBIT,
        )


def test_the_centre_s_own_host_speaks_with_the_centre_s_broker_user():
    check_sender(
        claimed_host="centre",
        host_broker_user="",
        local_host="centre",
        sender="central",
        broker=RABBIT,
    )


def test_a_broker_that_cannot_tell_who_published_is_trusted_for_this_machine_only():
    check_sender(
        claimed_host="centre", host_broker_user="", local_host="centre", sender=None, broker=REDIS
    )
    with pytest.raises(SenderRefused, match="a fleet of several hosts needs RabbitMQ"):
        check_sender(
            claimed_host="b",
            host_broker_user="gpuconfig-agent-b",
            local_host="centre",
            sender="gpuconfig-agent-b",
            broker=REDIS,
        )


NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "payload",
    [
        "not an object",
        {"host": "Bad Name", "sent_at": NOW.isoformat()},
        {"host": "b"},
        {"host": "b", "sent_at": "yesterday"},
        {"host": "b", "sent_at": "2026-12-04T12:00:00"},  # no time zone
        {"host": "b", "sent_at": NOW.isoformat(), "agent_version": "x" * 41},
        {"host": "b", "sent_at": NOW.isoformat(), "runtime": 7},
    ],
)
def test_a_malformed_heartbeat_is_refused(payload):
    with pytest.raises(MessageInvalid):
        Heartbeat.from_payload(payload)


def test_a_heartbeat_round_trips_through_its_payload():
    beat = Heartbeat(host="b", agent_version="1.2", runtime="podman", sent_at=NOW)
    assert Heartbeat.from_payload(beat.as_payload()) == beat


def test_state_is_never_seen_then_online_then_offline_after_three_missed_beats():
    host = Host(name="b")
    assert host.state_at(NOW, 30) is HostState.NEVER_SEEN
    host.last_heartbeat = NOW - timedelta(seconds=90)
    assert host.state_at(NOW, 30) is HostState.ONLINE
    host.last_heartbeat = NOW - timedelta(seconds=91)
    assert host.state_at(NOW, 30) is HostState.OFFLINE


def test_an_agent_may_write_only_the_central_exchange_and_read_only_its_queue():
    assert agent_permissions("gpu-b") == (
        "^$",
        r"^gpuconfig\.central$",
        r"^gpuconfig\.host\.gpu-b$",
    )
    commands = rabbitmq_commands("gpu-b", vhost="fleet", user="u", password_file="pw.txt")
    assert commands[1] == (
        r"rabbitmqctl set_permissions -p fleet u '^$' '^gpuconfig\.central$' "
        r"'^gpuconfig\.host\.gpu-b$'"
    )


@pytest.mark.django_db
def test_this_machine_s_host_exists_from_the_migration(settings):
    assert Host.objects.filter(name=settings.GPUCONFIG_HOST_NAME).exists()


@pytest.mark.django_db
def test_a_heartbeat_over_redis_moves_only_this_machine_s_host(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    register = host_register(name="gpu-b")
    mine = Heartbeat(
        host=settings.GPUCONFIG_HOST_NAME, agent_version="1", runtime="docker", sent_at=NOW
    )
    assert heartbeat_receive(mine.as_payload(), sender=None).last_heartbeat is not None
    theirs = Heartbeat(host="gpu-b", agent_version="1", runtime="docker", sent_at=NOW)
    assert heartbeat_receive(theirs.as_payload(), sender="gpuconfig-agent-b") is None
    register.refresh_from_db()
    assert register.last_heartbeat is None


@pytest.mark.django_db
def test_host_add_registers_and_prints_the_broker_commands_then_refuses_a_duplicate(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    out = StringIO()
    call_command("host", "add", "gpu-b", "--display-name", "Lab box", stdout=out)
    host = Host.objects.get(name="gpu-b")
    assert (host.display_name, host.broker_user) == ("Lab box", "gpuconfig-agent-gpu-b")
    assert "rabbitmqctl set_permissions -p gpuconfig gpuconfig-agent-gpu-b" in out.getvalue()
    with pytest.raises(CommandError, match="already registered"):
        call_command("host", "add", "gpu-b", stdout=StringIO())
    with pytest.raises(CommandError, match="lower-case letters"):
        call_command("host", "add", "Bad_Name", stdout=StringIO())
    listing = StringIO()
    call_command("host", "list", stdout=listing)
    assert "gpu-b\tnever_seen\tlast seen never" in listing.getvalue()


@pytest.mark.django_db
def test_the_hosts_api_lists_each_host_with_its_state(viewer_client, settings, reference_inventory):
    host_register(name="gpu-b", display_name="Lab box")
    rows = {row["name"]: row for row in viewer_client.get("/api/system/hosts").json()}
    assert rows["gpu-b"] == {
        "name": "gpu-b",
        "display_name": "Lab box",
        "state": "never_seen",
        "last_heartbeat": None,
        "gpus": 0,
        "agent_version": "",
    }
    assert rows[settings.GPUCONFIG_HOST_NAME]["gpus"] == 2  # the reference inventory's


def test_an_invalid_host_name_setting_names_the_variable(monkeypatch):
    import importlib

    import gpuconfig_site.settings as site_settings

    monkeypatch.setenv("GPUCONFIG_HOST_NAME", "Not_A_Host")
    with pytest.raises(ImproperlyConfigured, match="GPUCONFIG_HOST_NAME must be"):
        importlib.reload(site_settings)
    monkeypatch.delenv("GPUCONFIG_HOST_NAME")
    importlib.reload(site_settings)
