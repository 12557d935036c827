"""`tunegate`: run the flow, chat with an endpoint, see and clean what a workspace holds.

One module per command group; importing this package registers every command on `app`. Prefect and the flow are
imported by the commands that need them: `tunegate sample` or `inventory` start in a fraction of the second that
importing Prefect takes.
"""

import importlib

from flows.cli.common import app
from flows.cli.progress import AboveTheBar, TrainingBar

# in the order `tunegate --help` lists them
COMMAND_GROUPS = ("running", "reviewing", "serving", "rollouts", "looking", "data", "models")
for group in COMMAND_GROUPS:
    importlib.import_module(f"flows.cli.{group}")

__all__ = ["AboveTheBar", "TrainingBar", "app"]
