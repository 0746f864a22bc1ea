"""Delivery to agents: signed webhooks with retries, the event stream, capability tokens.

``jobs`` writes a delivery with its message; ``dispatcher`` sends it (Standard
Webhooks signing in ``signing``, retry timing in ``schedule``); ``stream``
serves the same rows as server-sent events; ``tokens`` issues and checks
capability tokens; ``manage`` is the operator's list/show/replay/enable.
"""
