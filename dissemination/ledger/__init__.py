"""The ledger: what was received and what each alert is to become.

Owns recording alerts with their payloads, references, rejections and quarantine; planning
the delivery rows of an alert from the matcher (and from the recipients of the alerts it
refers to); and the progress reports read back from the ledger. May import `controls`,
`acks`, `directory`, `broker`, `store`, the flat modules, `subscriptions`, `channels`, `core`.
"""
