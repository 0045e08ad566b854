"""Staff accounts: who they are (roles, clearance, organisation), how they prove it
(argon2 passwords, TOTP with one-time recovery codes) and their sign-in sessions."""
