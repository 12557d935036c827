"""The flow, its parameters, its deployments and the CLI."""

import os

# offline machines: no analytics calls from an ephemeral Prefect server (set before prefect is imported)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
