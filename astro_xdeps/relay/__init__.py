"""The relay: turns signed state events from other deployments into DAG runs here.

``signing`` checks who sent a request and ``events`` checks what it says; both are pure
(standard library only) so they can be tested, and reused by senders, without a server.
"""
