"""The subscription domain: stakeholders, contacts and rules as a model, the rule
language, clearance, quiet hours and the indexed matcher. Imports `channels` (to check a
webhook address as the channel will) and `core`; never `dissemination`."""
