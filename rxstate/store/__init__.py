"""The store kernel: connections, collections, the Writer, batches, transactions, locks, constraints."""
