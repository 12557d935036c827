"""The sample-data stage: the sampler of tasks/sampling.py as a Prefect task, with a log line of what it kept."""

from __future__ import annotations

from pathlib import Path

from tasks.errors import stage
from tasks.sampling import SampledData, sample_to_directory
from tasks.settings import DataSettings


@stage("sample data")
def sample_data(settings: DataSettings, out_dir: str, cache_dir: str) -> SampledData:
    from prefect import get_run_logger

    result = sample_to_directory(settings, Path(out_dir), Path(cache_dir))
    get_run_logger().info(
        "sampled %s from %s; dropped %d invalid rows %s; fingerprint %s",
        result.rows,
        settings.source,
        result.dropped,
        result.invalid,
        result.fingerprint,
    )
    return result
