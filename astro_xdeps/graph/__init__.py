"""The cross-deployment dependency graph: a pure model, renderers, and the readers that feed it.

``model`` builds nodes and edges from routes, relay rules and the provenance of items sent and
events received, and lays them out in layers; ``render`` writes Mermaid, DOT and text;
``sources`` reads this deployment's configuration, outbox and Airflow database.
"""
