"""Recorded AMI traces: record raw AMI traffic from a real Asterisk, and read it back as events.

A trace file is what Asterisk sent, blank-line separated, with '\\n' line ends (lines starting with '#' are
comments). `python -m tests.hotline.ami_trace record out.txt 30` records 30 s from the dev PBX.
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hotline.client import AmiEvent, to_event

FIXTURES = Path(__file__).parent / "fixtures" / "ami"


def parse_blocks(text: str) -> list[dict[str, str | list[str]]]:
    """Split a trace into header mappings (repeated headers become lists, like panoramisk does)."""
    blocks: list[dict[str, str | list[str]]] = []
    for raw in text.replace("\r\n", "\n").split("\n\n"):
        headers: dict[str, str | list[str]] = {}
        for line in raw.split("\n"):
            if not line or line.startswith("#") or ": " not in line:
                continue
            key, value = line.split(": ", 1)
            if key in headers:
                old = headers[key]
                headers[key] = [*(old if isinstance(old, list) else [old]), value]
            else:
                headers[key] = value
        if headers:
            blocks.append(headers)
    return blocks


def load_blocks(name: str) -> list[dict[str, str | list[str]]]:
    """Every block of a fixture trace, in the order Asterisk sent them."""
    return parse_blocks((FIXTURES / name).read_text(encoding="utf-8"))


def load_events(name: str) -> list[AmiEvent]:
    """The live events of a fixture trace (action replies and their list items left out)."""
    return [to_event(b, received_at=0.0) for b in load_blocks(name) if "Event" in b and "ActionID" not in b]


@dataclass
class SplitTrace:
    """A trace cut at the first reply of the given actions: events before, the replies' items, events after."""

    before: list[AmiEvent]
    replies: dict[str, list[AmiEvent]]
    after: list[AmiEvent]


def split_trace(name: str) -> SplitTrace:
    """Cut a trace at its first action reply (a snapshot taken mid-call)."""
    split = SplitTrace([], {}, [])
    seen_reply = False
    for block in load_blocks(name):
        action_id = block.get("ActionID")
        if isinstance(action_id, str) and action_id:
            seen_reply = True
            if "Event" in block:
                split.replies.setdefault(action_id, []).append(to_event(block, received_at=0.0))
            continue
        if "Event" not in block:
            continue
        (split.after if seen_reply else split.before).append(to_event(block, received_at=0.0))
    return split


def record(path: Path, seconds: float, *, host: str = "127.0.0.1", port: int = 5038, username: str = "intake",
           secret: str = "intake-dev-ami") -> None:
    """Log in and write everything Asterisk sends for `seconds` seconds."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"Action: Login\r\nUsername: {username}\r\nSecret: {secret}\r\n"
                     f"Events: call,agent,user,system\r\n\r\n".encode())
        sock.settimeout(0.2)
        chunks = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            chunks.append(data)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "record":
        record(Path(sys.argv[2]), float(sys.argv[3]))
    else:
        sys.exit("usage: python -m tests.hotline.ami_trace record OUT.txt SECONDS")
