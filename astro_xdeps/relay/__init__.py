"""The relay: turns signed state events from other deployments into DAG runs here.

``signing`` checks who sent a request, ``body`` and ``payloads`` (with ``astro_alerts``) what it
says; all are pure, so they can be tested, and reused by senders, without a server. The event
they produce, ``StateEvent``, lives in ``astro_xdeps.state_events``, shared with the senders.
"""
