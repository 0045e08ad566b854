"""The operator console: server-rendered pages for the staff who run the service (sign-in,
the live board, alerts, approvals, the directory, compose-and-send, the record, accounts).
Every page reads and changes through the same stores, planner and need-to-know rules as the
JSON API; forms post to the console and work without JavaScript, which only enhances them."""
