"""Security: encryption at rest of secret fields, and who may do what.

Encryption (``providers``, ``cipher``, ``keyring``, ``reencrypt``): key providers, the namespace's key
ring, re-encryption. Access (``principals``, ``acl``, ``policy``, ``guard``): principals as server ACL
users, and the policy checked before every operation (loaded only by a principal's store).

Fields typed ``rxstate.Secret[...]`` or classified ``confidential``/``secret`` are encrypted in this
process with AES-256-GCM under a data key of the namespace, bound to their entity and field; the data
keys are stored in Redis wrapped by a key-encryption key that a ``KeyProvider`` holds. Open a store with
``rxstate.connect(..., keys=EnvKeyProvider("RXSTATE_KEK"))`` and manage keys with ``store.keys``.

Example:
    >>> store = rxstate.connect(keys=rxstate.security.EnvKeyProvider("RXSTATE_KEK"))  # doctest: +SKIP
"""

from rxstate.security.keyring import KeyRing
from rxstate.security.providers import EnvKeyProvider, FileKeyProvider, KeyProvider, StaticKeyProvider, generate_key
from rxstate.security.reencrypt import Progress

__all__ = [
    "EnvKeyProvider",
    "FileKeyProvider",
    "KeyProvider",
    "KeyRing",
    "Progress",
    "StaticKeyProvider",
    "generate_key",
]
