"""What tests and benchmarks run the service against, on loopback: an SMTP sink (aiosmtpd),
a Twilio-compatible fake the real twilio SDK is pointed at, sample CAP alerts, a directory
seeded in bulk, and a RabbitMQ cluster of its own with the scale-out run over it
(`scripts/cluster`). Not part of the service: nothing in `core`, `channels`,
`subscriptions` or `dissemination` imports it."""
