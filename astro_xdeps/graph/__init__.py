"""The cross-deployment dependency graph: a pure model, renderers, and the readers that feed it.

``model`` builds nodes and edges from routes, relay rules and observed flows; ``flows`` reads
flows from the provenance of items sent and events received; ``layout`` places the nodes in
columns; ``render`` writes Mermaid, DOT and text; ``sources`` reads this deployment's
configuration, outbox sample and Airflow database.
"""
