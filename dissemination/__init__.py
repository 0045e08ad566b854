"""fusion-dissemination: alerts in from RabbitMQ, matched to stakeholders, delivered by
email, SMS and webhook, acknowledged and recorded.

The rooms, from the top; each may import only the rooms below it (the layers contract in
pyproject.toml, checked by `scripts/test`):

    cli, service       the command line, and start-up and shutdown of the whole service
    api                the HTTP API
    intake | delivery  alerts in; rows out to the channels
    ledger             alerts recorded and their delivery rows planned; progress
    controls           approval, special releases, redaction, send-time checks, record
    acks               ack tokens, acknowledgments, escalation, CAP Ack
    directory          stakeholders, contacts, subscriptions as stored, and their sync
    broker | store     RabbitMQ; the database
    settings, errors, retrying, periodic, failpoints   shared by every room

Below `dissemination` come `subscriptions` (the directory's model and the matcher),
`channels` (email, SMS, webhook) and `core` (the alert model, errors, validation).
"""
