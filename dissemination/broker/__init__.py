"""The broker: the RabbitMQ connection and topology, publishing with confirms, and the
dispatch of delivery tasks onto channel and retry queues.

Imports only the flat modules of `dissemination` and `core`.
"""
