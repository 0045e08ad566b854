"""Dissemination controls: what may be sent, to whom, and the proof of what was.

Owns two-person approval and its rules, imminent-danger releases, PII redaction, the
send-time clearance check, the hash-chained dissemination record and retention. May import
`acks`, `directory`, `broker`, `store`, the flat modules, `subscriptions`, `channels`, `core`.
"""
