"""Hierarchical scopes: settings and shared memory read from the nearest scope that defines them.

``store.scope("org/acme/team-a/agent-7")`` (see ``rxstate.scopes.scope``): inheritance, final values,
merge policies, typed scopes, access rules that flow down, time-limited delegation, watch.
"""

from rxstate.scopes.access import Delegation, ScopeDecision
from rxstate.scopes.merging import Entry, Explanation
from rxstate.scopes.scope import Scope
from rxstate.scopes.tree import ScopeTree, scope_tree

__all__ = ["Delegation", "Entry", "Explanation", "Scope", "ScopeDecision", "ScopeTree", "scope_tree"]
