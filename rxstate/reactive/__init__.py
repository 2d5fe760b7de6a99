"""Reactive views of state: watching entities, derived values and their graph, change-stream operators."""
