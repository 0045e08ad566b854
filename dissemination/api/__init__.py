"""The HTTP API: the aiohttp application, bearer-token authentication, the error format, the
request helpers, and one module per API (directory, acknowledgments, controls, progress,
Twilio hooks).

Handlers parse and authorize; the work is done by the rooms below. May import every other
room of `dissemination` except `service` and `cli`.
"""
