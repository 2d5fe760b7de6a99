"""The local cache: an LRU of decoded entities and what keeps it from serving stale values."""
