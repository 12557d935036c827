"""The anchor of a warm `tunegate run`: a Prefect flow of 20 empty tasks (a default run's), on a temporary server.

    python -m bench.bare_flow

What Prefect itself costs for a flow the shape of tunegate's (one task per stage), so the table can show how much
of a run is tunegate's own work.
"""

from __future__ import annotations

from prefect import flow, task

# The task runs of a default local `tunegate run` (counted in its log): sample data, pick model, validate compute,
# upload data, submit fine-tune, wait for fine-tune, report training, read champion (twice), check metrics, register
# model, record decision, deploy, smoke invoke, answer prompts, record evaluation, log evaluation, read endpoint,
# promote, teardown
STAGES = 20


@task
def stage(number: int) -> int:
    return number


@flow(log_prints=False)
def bare(stages: int = STAGES) -> int:
    return sum(stage(number) for number in range(stages))


if __name__ == "__main__":
    bare()
