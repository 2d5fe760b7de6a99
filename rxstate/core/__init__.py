"""The pure core: errors, keys, codec, models and redaction, script loading, write ops and their
argument format, reply decoding. Nothing here opens a socket or imports a higher layer of rxstate."""
