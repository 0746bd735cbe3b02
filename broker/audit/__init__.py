"""Tamper evidence for the audit log: RFC 6962 Merkle trees, signed checkpoints, verification.

`merkle` hashes entries into a tree, `checkpoints` signs and checks tree heads, `verify` checks
a whole log against its checkpoints, and `checkpointer` makes checkpoints as the log grows.
"""
