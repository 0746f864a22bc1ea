"""Stalwart mode end to end with the stand-in in a real Docker container the appliance supervises through
the Engine API: SMTP in, hook, push, webhook; the appliance restarted adopts the running container."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.delivery.receiver import WebhookReceiver
from tests.dnsserver import DnsTestServer
from tests.images import docker_available, standin_image
from tests.stalwart.stack import SENDER_ZONE, Stack, send

pytestmark = [pytest.mark.container,
              pytest.mark.skipif(not docker_available(), reason="no Docker Engine answers here")]


@pytest.fixture
def name() -> Iterator[str]:
    """A container and volume name of this test's own; whatever is left is removed after it."""
    value = f"appliance-test-{uuid.uuid4().hex[:8]}"
    yield value
    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"name": value}):
        container.remove(force=True)
    for volume in (f"{value}-etc", f"{value}-data"):
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(volume).remove(force=True)


def test_the_appliance_runs_stalwart_in_a_container_and_dispatches_from_it(tmp_path: Path, name: str) -> None:
    with DnsTestServer(SENDER_ZONE) as dns, WebhookReceiver() as receiver:
        stack = Stack(tmp_path, dns, receiver.url, image=standin_image(), name=name)
        with stack.running():
            send(stack.stalwart_smtp, "one")
            assert json.loads(receiver.wait_for(1, timeout=30)[0].body)["data"]["subject"] == "one"
            first = docker.from_env().containers.get(name).id
        # our SIGTERM stopped the container gracefully
        assert docker.from_env().containers.get(name).status == "exited"
        with stack.running():  # started again (same container, its volumes kept): configured already
            assert docker.from_env().containers.get(name).id == first
            send(stack.stalwart_smtp, "two")
            got = receiver.wait_for(2, timeout=30)
        assert sorted(json.loads(r.body)["data"]["subject"] for r in got) == ["one", "two"]
        assert "(0 change(s))" in stack.appliance.log.read_text().rsplit("appliance started", 1)[-1]
