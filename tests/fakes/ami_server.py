"""A small asyncio AMI server speaking the Asterisk Manager protocol, for client tests without a PBX.

It answers Login, Ping, QueueStatus, QueueAdd, Originate (sync and async) like Asterisk 22 does, pushes
events on demand, and can drop connections or go silent (a half-open link) to exercise reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence


def block(headers: Sequence[tuple[str, str]]) -> bytes:
    """One AMI message."""
    return ("".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode()


class FakeAmi:
    """Listens on 127.0.0.1:<port>; `actions` records every action received (name, headers)."""

    def __init__(self, *, username: str = "intake", secret: str = "s3cret") -> None:
        """Accept this login only."""
        self.username, self.secret = username, secret
        self.port = 0
        self.actions: list[tuple[str, dict[str, str]]] = []
        self.logins = 0
        self.silent = False  # when True, actions are read but never answered (half-open link)
        self.ignore: set[str] = set()  # action names left unanswered
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> FakeAmi:
        """Start listening on a free port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close every connection and the listener."""
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop(self) -> None:
        """Cut every client connection (as a PBX restart does)."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def push(self, *messages: Sequence[tuple[str, str]] | bytes) -> None:
        """Send events to every logged-in client."""
        data = b"".join(m if isinstance(m, bytes) else block(m) for m in messages)
        for writer in list(self._writers):
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        logged_in = False
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                headers: dict[str, list[str]] = {}
                for line in raw.decode().split("\r\n"):
                    if ": " in line:
                        key, value = line.split(": ", 1)
                        headers.setdefault(key, []).append(value)
                flat = {k: v[0] for k, v in headers.items()}
                name = flat.get("Action", "")
                action_id = flat.get("ActionID", "")
                if name.lower() != "login":
                    self.actions.append((name, {**flat, "Variable": ",".join(headers.get("Variable", []))}))
                if name.lower() == "login":
                    if flat.get("Username") == self.username and flat.get("Secret") == self.secret:
                        logged_in = True
                        self.logins += 1
                        self._writers.add(writer)
                        writer.write(block([("Response", "Success"), ("ActionID", action_id),
                                            ("Message", "Authentication accepted")]))
                        writer.write(block([("Event", "FullyBooted"), ("Privilege", "system,all"),
                                            ("Status", "Fully Booted")]))
                    else:
                        writer.write(block([("Response", "Error"), ("ActionID", action_id),
                                            ("Message", "Authentication failed")]))
                elif not logged_in:
                    writer.write(block([("Response", "Error"), ("ActionID", action_id),
                                        ("Message", "Permission denied")]))
                elif self.silent or name in self.ignore:
                    pass
                else:
                    writer.write(self._answer(name, action_id, flat))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(self, name: str, action_id: str, flat: dict[str, str]) -> bytes:
        ok = [("Response", "Success"), ("ActionID", action_id)]
        if name == "Ping":
            return block([*ok, ("Ping", "Pong"), ("Timestamp", "1795324000.000000")])
        if name == "QueueStatus":
            return (block([*ok, ("EventList", "start"), ("Message", "Queue status will follow")])
                    + block([("Event", "QueueParams"), ("Queue", "hotline-12319"), ("ActionID", action_id)])
                    + block([("Event", "QueueMember"), ("Queue", "hotline-12319"), ("Name", "zhangsan"),
                             ("Location", "PJSIP/8001"), ("Status", "1"), ("Paused", "0"), ("ActionID", action_id)])
                    + block([("Event", "QueueStatusComplete"), ("ActionID", action_id), ("EventList", "Complete"),
                             ("ListItems", "2")]))
        if name == "QueueAdd":
            return block([*ok, ("Message", "Added interface to queue")])
        if name == "Originate":
            if flat.get("Async", "").lower() == "true":
                return (block([*ok, ("Message", "Originate successfully queued")])
                        + block([("Event", "OriginateResponse"), ("Privilege", "call,all"), ("ActionID", action_id),
                                 ("Response", "Success"), ("Channel", flat.get("Channel", "")),
                                 ("Uniqueid", flat.get("ChannelId", "")), ("Reason", "4")]))
            return block([*ok, ("Message", "Originate successfully queued")])
        return block([("Response", "Error"), ("ActionID", action_id), ("Message", "Invalid/unknown command")])
