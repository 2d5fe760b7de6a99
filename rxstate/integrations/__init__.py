"""rxstate.integrations."""
