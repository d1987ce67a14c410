"""The AMI client against a protocol-faithful fake AMI server: login, events, timeouts, drops, the ping watchdog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import panoramisk.utils
import pytest

from hotline.client import AmiEvent, AmiNotConnected, AmiTimeout, PanoramiskAmi, Reconnected
from tests.fakes.ami_server import FakeAmi


@pytest.fixture(autouse=True)
def _eol() -> None:
    # panoramisk.testing sets this module global to '\n'; real AMI (and our fake) uses '\r\n'.
    panoramisk.utils.EOL = "\r\n"


@pytest.fixture
async def server() -> AsyncIterator[FakeAmi]:
    fake = await FakeAmi().start()
    yield fake
    await fake.stop()


async def connect(server: FakeAmi, **kwargs: float) -> PanoramiskAmi:
    ami = PanoramiskAmi(host="127.0.0.1", port=server.port, username="intake", secret="s3cret",
                        timeout=kwargs.pop("timeout", 1.0), ping_interval=kwargs.pop("ping_interval", 5.0))
    await ami.start()
    await next_of(ami, Reconnected)
    return ami


async def next_of(ami: PanoramiskAmi, kind: type, wait: float = 5.0) -> object:
    async def _wait() -> object:
        while True:
            item = await ami.events.get()
            if isinstance(item, kind):
                return item

    return await asyncio.wait_for(_wait(), wait)


async def test_login_events_and_channel_variables(server: FakeAmi) -> None:
    ami = await connect(server)
    try:
        assert ami.connected and "logged in" in ami.detail
        await server.push([("Event", "Newchannel"), ("Uniqueid", "1.1"), ("Linkedid", "1.1"),
                           ("ChanVariable", "DID=12319")],  # one ChanVariable: panoramisk's getdict() fails here
                          [("Event", "Hangup"), ("Uniqueid", "1.1"), ("Linkedid", "1.1"),
                           ("ChanVariable", "DID=12319"), ("ChanVariable", "RECFILE=a.wav"), ("Cause", "16")])
        first = await next_of(ami, AmiEvent)
        second = await next_of(ami, AmiEvent)
        assert isinstance(first, AmiEvent) and isinstance(second, AmiEvent)
        assert first.name == "Newchannel" and first.variables == {"DID": "12319"}
        assert second.variables == {"DID": "12319", "RECFILE": "a.wav"} and second.get("Cause") == "16"
    finally:
        await ami.stop()


async def test_unknown_and_malformed_events_do_not_break_the_link(server: FakeAmi) -> None:
    ami = await connect(server)
    try:
        await server.push(b"Event: FromTheFuture\r\nWeird: \xff\xfe\r\n\r\n", b"garbage without colon\r\n\r\n",
                          [("Event", "Newstate"), ("Uniqueid", "2.2")])
        event = await next_of(ami, AmiEvent)
        assert isinstance(event, AmiEvent) and event.name == "FromTheFuture"
        event = await next_of(ami, AmiEvent)
        assert isinstance(event, AmiEvent) and event.name == "Newstate"
        reply = await ami.action("Ping")
        assert reply.response == "Success" and server.logins == 1  # same connection, no reconnect
    finally:
        await ami.stop()


async def test_unanswered_action_times_out_and_is_not_replayed(server: FakeAmi) -> None:
    ami = await connect(server, timeout=0.3)
    try:
        server.ignore.add("Hangup")
        with pytest.raises(AmiTimeout):
            await ami.action("Hangup", {"Channel": "PJSIP/8001-00000001"})
        server.drop()
        await next_of(ami, Reconnected)
        await asyncio.sleep(0.3)
        # panoramisk would re-send unanswered actions after the reconnect (a duplicate hang-up or call).
        assert [name for name, _ in server.actions].count("Hangup") == 1
    finally:
        await ami.stop()


async def test_drop_reconnects_and_fails_pending_actions_fast(server: FakeAmi) -> None:
    ami = await connect(server, timeout=5.0)
    try:
        server.ignore.add("Setvar")
        pending = asyncio.ensure_future(ami.action("Setvar", {"Variable": "X", "Value": "1"}))
        await asyncio.sleep(0.1)
        server.drop()
        with pytest.raises(AmiNotConnected):
            await asyncio.wait_for(pending, 2)  # not the 5 s timeout: the drop fails it at once
        marker = await next_of(ami, Reconnected)
        assert isinstance(marker, Reconnected) and marker.generation == 2 and marker.lost_at is not None
        assert ami.connected and server.logins == 2
    finally:
        await ami.stop()


async def test_watchdog_drops_a_half_open_link(server: FakeAmi) -> None:
    ami = await connect(server, timeout=0.3, ping_interval=0.2)
    try:
        server.silent = True  # the TCP link stays up but nothing answers
        await asyncio.sleep(1.0)
        server.silent = False
        marker = await next_of(ami, Reconnected, wait=5)
        assert isinstance(marker, Reconnected) and marker.generation >= 2
    finally:
        await ami.stop()


async def test_originate_is_always_async_with_our_channel_id(server: FakeAmi) -> None:
    ami = await connect(server)
    try:
        result = await ami.originate(channel="PJSIP/8001", context="callback", exten="13812345678",
                                     caller_id="<12319>", variables={"JOB_ID": "cb-1", "CALLBACK_DID": "12319"},
                                     channel_id="cb-0123", ring_timeout=5)
        assert result.answered and result.uniqueid == "cb-0123" and result.reason == "4"
        name, headers = server.actions[-1]
        assert name == "Originate" and headers["Async"] == "true" and headers["ChannelId"] == "cb-0123"
        assert headers["Variable"] == "JOB_ID=cb-1,CALLBACK_DID=12319"
        # A synchronous Originate still carries an explicit Async (panoramisk 1.4 crashes without it).
        reply = await ami.action("Originate", {"Channel": "PJSIP/8001", "Application": "Echo"})
        assert reply.response == "Success" and server.actions[-1][1]["Async"] == "false"
        assert ami.connected and server.logins == 1
    finally:
        await ami.stop()


async def test_queueadd_and_list_actions_resolve(server: FakeAmi) -> None:
    ami = await connect(server)
    try:
        added = await ami.action("QueueAdd", {"Queue": "hotline-12319", "Interface": "PJSIP/8001"})
        assert added.message == "Added interface to queue"
        status = await ami.action("QueueStatus")
        assert [e.name for e in status.events] == ["QueueParams", "QueueMember", "QueueStatusComplete"]
    finally:
        await ami.stop()


async def test_wrong_secret_is_reported_not_hidden(server: FakeAmi) -> None:
    ami = PanoramiskAmi(host="127.0.0.1", port=server.port, username="intake", secret="wrong", timeout=0.2,
                        ping_interval=0.2)
    await ami.start()
    try:
        await asyncio.sleep(1.0)
        assert not ami.connected
        assert "login" in ami.detail
        with pytest.raises(AmiNotConnected):
            await ami.action("Ping")
    finally:
        await ami.stop()
