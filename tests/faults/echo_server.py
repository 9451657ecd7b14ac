"""A stand-in node for the lab's own tests: a TCP echo server, one thread per connection.

Usage: python echo_server.py ADDRESS PORT. Every byte received is sent back; stdlib only, so it
starts fast in any namespace.
"""

from __future__ import annotations

import socketserver
import sys


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv: list[str]) -> None:
    address, port = argv[1], int(argv[2])
    with _Server((address, port), _Echo) as server:
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
