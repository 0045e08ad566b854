"""Intake: from bytes on `alerts.inbound` (or an HTTP ingest) to alerts stored in the ledger.

Owns decoding (CAP XML and JSON, NWS GeoJSON, local kinds), normalization into the alert
model, the intake processor (validate, inherit marks, plan, store through the group commit)
and the AMQP consumer that settles each message once. May import `ledger`, `controls`,
`acks`, `directory`, `broker`, `store`, the flat modules of `dissemination`, and
`channels`, `subscriptions` and `core`; never `delivery` or `api`.
"""
