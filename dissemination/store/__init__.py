"""The store: the database connection (SQLite or PostgreSQL), its tables and migrations, the
vocabulary of ledger rows, the audit log and the group commit.

Imports only the flat modules of `dissemination`, `subscriptions`, `channels` and `core`.
"""
