"""Subscriptions (R4 subscription.html; Subscriptions R5 Backport IG 1.1.0): criteria and
topic-based subscriptions, events matched from the store's change log, durable delivery
over rest-hook and websocket channels."""
