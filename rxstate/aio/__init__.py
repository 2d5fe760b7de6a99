"""rxstate.aio."""
