"""Operators for change streams (the public name of :mod:`rxstate.reactive.ops`)."""

from rxstate.reactive.ops import *  # noqa: F403
from rxstate.reactive.ops import __all__ as __all__
