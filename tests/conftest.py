"""The rxstate pytest plugin provides the fixtures (rx_store, rx_backend, rx_server, ...)."""
