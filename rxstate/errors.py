"""The exceptions rxstate raises: the public name of :mod:`rxstate.core.errors`."""

from rxstate.core.errors import *  # noqa: F403
from rxstate.core.errors import __all__ as __all__
from rxstate.core.errors import __doc__ as __doc__  # the drawn tree
