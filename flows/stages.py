"""Every stage task of the flow, with the profile's retries applied once (not around every call)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tasks import (
    approval,
    chatflow,
    compute,
    data,
    deploy,
    evaluation,
    evaluation_report,
    finetune,
    metrics,
    model,
    register,
    rollout,
    rollout_traffic,
    teardown,
    training,
)
from tasks import promote as promotion
from tasks.settings import RetrySettings


@dataclass(frozen=True)
class Stages:
    sample_data: Any = data.sample_data
    pick_model: Any = model.pick_model
    validate_compute: Any = compute.validate_compute
    upload_data: Any = finetune.upload_data
    submit_finetune: Any = finetune.submit_finetune
    wait_for_finetune: Any = training.wait_for_finetune
    report_training: Any = training.report_training
    read_champion: Any = metrics.read_champion
    check_metrics: Any = metrics.check_metrics
    register_model: Any = register.register_model
    record_decision: Any = approval.record_decision
    deploy_candidate: Any = deploy.deploy_candidate
    smoke_invoke: Any = deploy.smoke_invoke
    smoke_promptflow: Any = chatflow.smoke_promptflow
    answer_prompts: Any = evaluation.answer_prompts
    find_serving: Any = evaluation.find_serving
    record_evaluation: Any = evaluation_report.record_evaluation
    log_evaluation: Any = evaluation_report.log_evaluation
    roll_back: Any = promotion.roll_back
    live_model_of: Any = rollout_traffic.live_model_of
    shift_traffic: Any = rollout_traffic.shift_traffic
    watch_window: Any = rollout.watch_window
    restore_live: Any = rollout_traffic.restore_live
    record_rollout: Any = rollout_traffic.record_rollout
    promote: Any = promotion.promote
    read_endpoint: Any = promotion.read_endpoint
    reconcile_endpoint: Any = promotion.reconcile_endpoint
    teardown: Any = teardown.teardown

    @classmethod
    def with_retries(cls, retries: RetrySettings) -> Stages:
        return cls(
            **{
                field.name: getattr(cls, field.name).with_options(
                    retries=retries.attempts, retry_delay_seconds=retries.delay_s
                )
                for field in fields(cls)
            }
        )
