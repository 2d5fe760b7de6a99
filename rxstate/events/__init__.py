"""Event sourcing: event collections, snapshots, projections, subscriptions and event queries."""
