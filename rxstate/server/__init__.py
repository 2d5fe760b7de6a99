"""Real servers: find the ``redis-server``/``valkey-server`` binary and run an embedded one."""

from rxstate.server.embedded import EmbeddedServer, find_server_binary, free_port

__all__ = ["EmbeddedServer", "find_server_binary", "free_port"]
