"""Real servers: find the ``redis-server``/``valkey-server`` binary, run an embedded one, share it."""

from rxstate.server.directory import serve
from rxstate.server.embedded import EmbeddedServer, data_dir_owner, find_server_binary, free_port
from rxstate.server.lease import ServerLease, attach

__all__ = ["EmbeddedServer", "ServerLease", "attach", "data_dir_owner", "find_server_binary", "free_port", "serve"]
