"""The directory as stored: stakeholders, contacts, subscriptions and escalation policies in
the database, every change audited, and the sync that keeps each instance's matcher current
from the audit log.

May import `store`, the flat modules, `subscriptions`, `channels` and `core`.
"""
