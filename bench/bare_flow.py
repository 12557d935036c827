"""The anchor of a warm `tunegate run`: a Prefect flow of 13 tasks that do nothing, on a temporary server.

    python -m bench.bare_flow

What Prefect itself costs for a flow the shape of tunegate's (one task per stage), so the table can show how much
of a run is tunegate's own work.
"""

from __future__ import annotations

from prefect import flow, task

STAGES = 13  # sample, validate compute, foundation, upload, submit, wait, metrics, gate, register, approve,
# deploy, smoke, teardown


@task
def stage(number: int) -> int:
    return number


@flow(log_prints=False)
def bare(stages: int = STAGES) -> int:
    return sum(stage(number) for number in range(stages))


if __name__ == "__main__":
    bare()
