"""rxstate.admin."""
