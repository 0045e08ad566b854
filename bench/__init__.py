"""Benchmarks of the dissemination service against the local RabbitMQ and stores."""
