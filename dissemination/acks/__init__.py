"""Acknowledgments: who confirmed what, and what happens when they do not.

Owns ack tokens (issue, sign, verify), recording acknowledgments, escalation timers kept in
the ledger and the engine that fires their steps, and CAP Ack messages to originators. May
import `directory`, `broker`, `store`, the flat modules, `subscriptions`, `channels`, `core`.
"""
