"""The delivery channels: email, SMS and webhook, each composing, sending and classifying
one message; and the destination checks webhooks make. Imports only `core`."""
