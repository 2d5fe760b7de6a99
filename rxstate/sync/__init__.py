"""rxstate.sync."""
