"""rxstate.scopes."""
