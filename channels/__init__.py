"""The delivery channels: email, SMS and webhook, each one class behind the one seam in
`base.py` that composes, sends and classifies a message; and the destination checks webhooks
make. Imports only `core`."""
