"""An HTTP/1.1 relay in front of Kannel that can swallow answers: the request arrives, the answer is lost."""

from __future__ import annotations

import socket
import socketserver
import threading

from tests.fakes.workflow_platform import free_port


def _read_message(sock: socket.socket) -> bytes | None:
    """Read one HTTP message (headers + Content-Length body); None when the peer closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class LossyRelay:
    """Relays HTTP requests to an upstream; with `swallow` set, forwards the request and drops the answer."""

    def __init__(self, upstream_port: int) -> None:
        """Listen on a free port."""
        self.port = free_port()
        self.upstream_port = upstream_port
        self.swallow = False
        self.swallowed = 0
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client: socket.socket = self.request
                while True:
                    request = _read_message(client)
                    if request is None:
                        return
                    with socket.create_connection(("127.0.0.1", relay.upstream_port), timeout=10) as upstream:
                        upstream.sendall(request)
                        response = _read_message(upstream)
                    if relay.swallow or response is None:
                        relay.swallowed += 1
                        client.close()  # the gateway did the work; the caller never hears of it
                        return
                    client.sendall(response)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> LossyRelay:
        """Serve in a thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
