"""Jobs: the model, submission, views (queue position, ETA, waiting_for), the ledger,
scheduling, sessions and watchers.
"""
