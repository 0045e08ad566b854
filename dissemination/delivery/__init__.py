"""Delivery: sending the rows the ledger planned.

Owns the per-channel workers (claim a batch, send concurrently behind per-host circuit
breakers, record outcomes, retry, fall back), the claims and settles they make on the
ledger, and the builder that makes a claimed row into the message a channel sends. May
import `controls`, `acks`, `directory`, `broker`, `store`, the flat modules, `channels`,
`subscriptions`, `core`; never `intake`, `ledger`'s recording or `api`.
"""
