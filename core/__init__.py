"""The shared core: the normalized alert model, the base error tree, JSON Schema validation,
strict JSON parsing and the clock.

Every other package builds on it, and it imports none of them: `channels`, `subscriptions`
and `dissemination` may import `core`; `core` imports only the standard library, jsonschema
and the `schemas` data package.
"""
