"""rxstate.tenancy."""
