"""What tests and benchmarks run the service against, on loopback: an SMTP sink (aiosmtpd),
a Twilio-compatible fake the real twilio SDK is pointed at, sample CAP alerts, and a
directory seeded in bulk. Not part of the service: nothing in `core`, `channels`,
`subscriptions` or `dissemination` imports it."""
