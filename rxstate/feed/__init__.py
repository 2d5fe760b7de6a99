"""The change feed: the ``Change`` type, stream readers, transaction assembly, delivery to subscribers."""
