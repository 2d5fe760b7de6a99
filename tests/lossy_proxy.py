"""A TCP proxy on loopback that loses replies to write script calls, for exactly-once tests.

It forwards bytes both ways between clients and a real server. Armed, it lets the server run the n-th
``EVALSHA`` it sees, then loses the server's reply: it drops it and closes that client connection
("drop"), or holds it past the client's socket timeout ("delay"). ``swallow`` loses the request itself,
so the server never runs it; ``refuse()`` turns new connections away, as a server that has gone away.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

_EVALSHA = b"\r\nEVALSHA\r\n"


class LossyProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._mode = ""
        self._countdown = 0
        self._delay = 0.0
        self._refusing = False
        self.lost = 0
        """How many replies (or requests) were lost so far."""
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, *, nth: int = 1, mode: str = "drop", delay: float = 0.0) -> None:
        """Lose what answers (or, with ``swallow``, what is) the ``nth`` next EVALSHA."""
        with self._lock:
            self._mode, self._countdown, self._delay = mode, nth, delay

    def refuse(self, on: bool = True) -> None:
        """Close every new connection at once (``on``), or accept them again."""
        self._refusing = on

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            lose = threading.Event()
            threading.Thread(target=self._upstream, args=(client, server, lose), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, lose), daemon=True).start()

    def _take(self, chunk: bytes) -> str:
        """The loss to apply because of this request chunk ("" for none)."""
        with self._lock:
            if not self._mode or _EVALSHA not in chunk:
                return ""
            self._countdown -= chunk.count(_EVALSHA)
            if self._countdown > 0:
                return ""
            mode, self._mode = self._mode, ""
            self.lost += 1
            return mode

    def _upstream(self, client: socket.socket, server: socket.socket, lose: threading.Event) -> None:
        try:
            while chunk := client.recv(65536):
                mode = self._take(chunk)
                if mode == "swallow":
                    break
                if mode:
                    lose.set()
                server.sendall(chunk)
        except OSError:
            pass
        _close(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket, lose: threading.Event) -> None:
        try:
            while chunk := server.recv(65536):
                if lose.is_set():
                    if self._delay:
                        time.sleep(self._delay)
                        client.sendall(chunk)  # late: the client has given up on this connection
                    break
                client.sendall(chunk)
        except OSError:
            pass
        _close(client, server)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


@contextmanager
def lossy_proxy(target_port: int) -> Iterator[LossyProxy]:
    proxy = LossyProxy(target_port)
    try:
        yield proxy
    finally:
        proxy.close()
