"""The backend-independent rules as plain functions: no Prefect, no workspace."""

from __future__ import annotations

import math
import re
from pathlib import Path

import httpx
import pytest

from tasks.approval import policy_decision
from tasks.compute import ComputeRejected, check_provisioning, check_size_allowed, gpus_for_size, validate
from tasks.deploy import DeploymentRefused, check_instance_type, deployment_name
from tasks.errors import is_transient
from tasks.evaluation import Evaluation
from tasks.finetune import NOTEBOOK_DEFAULTS, merge_finetune_parameters, pipeline_display_name
from tasks.gate import beats_champion, evaluate_gate
from tasks.gate_advice import stop_message
from tasks.model import TagError, allow_list, model_specific_defaults, parse_literal_tag
from tasks.settings import ApprovalSettings, FinetuneSettings, GateSettings
from workspaces.ports import Compute, FoundationModel, ModelVersion, Sku, TransientWorkspaceError, WorkspaceError


def model(**tags: str) -> FoundationModel:
    return FoundationModel(name="Phi-3-mini-4k-instruct", version="7", id="azureml://x", tags=tags)


SKUS = [
    Sku(name="Standard_NC24ads_A100_v4", gpus=1),
    Sku(name="Standard_NC96ads_A100_v4", gpus=4),
    Sku(name="STANDARD_NC6", gpus=1),
]


# ---------------------------------------------------------------- §3 compute rules


def test_failed_provisioning_is_rejected():
    with pytest.raises(ComputeRejected, match="in failed state"):
        check_provisioning(Compute(name="c", size="x", provisioning_state="Failed"))
    check_provisioning(Compute(name="c", size="x", provisioning_state="Succeeded"))


def test_allow_list_is_case_insensitive():
    check_size_allowed("standard_nc24ads_a100_v4", ["Standard_NC24ads_A100_v4"])


def test_size_outside_allow_list_is_rejected_even_if_not_denied():
    with pytest.raises(ComputeRejected, match="not in the allow-listed computes"):
        check_size_allowed("Standard_NC12s_v3", ["Standard_NC24ads_A100_v4"])


@pytest.mark.parametrize("size", ["Standard_NC6", "STANDARD_NC12", "standard_nc24", "Standard_NC24r"])
def test_deny_list_applies_without_allow_list(size):
    with pytest.raises(ComputeRejected, match="on the notebook's deny list for fine-tuning"):
        check_size_allowed(size, None)


def test_allow_list_wins_over_deny_list():
    check_size_allowed("Standard_NC6", ["standard_nc6"])  # an explicit allow list is the model's own word


def test_size_neither_denied_nor_listed_passes_without_allow_list():
    check_size_allowed("Standard_NC24ads_A100_v4", None)


def test_gpu_count_from_size_list_case_insensitive():
    assert gpus_for_size("standard_nc96ads_a100_v4", SKUS, "c") == 4


def test_unknown_size_lists_available_skus():
    with pytest.raises(ComputeRejected, match="Available skus are: .*Standard_NC24ads_A100_v4"):
        gpus_for_size("Standard_ND40rs_v2", SKUS, "c")


def test_validate_combines_the_rules():
    tags = {"finetune_compute_allow_list": "['Standard_NC96ads_A100_v4']"}
    got = validate(
        Compute(name="gpu", size="Standard_NC96ads_A100_v4", provisioning_state="Succeeded"), model(**tags), SKUS
    )
    assert got.gpus_per_node == 4 and got.name == "gpu"


# ---------------------------------------------------------------- tags


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os').system('touch /tmp/tunegate-pwned')",
        "open('/etc/passwd').read()",
        "[x for x in ()]",
        "lambda: 1",
    ],
)
def test_hostile_tag_strings_are_refused_not_run(hostile):
    with pytest.raises(TagError, match="finetune_compute_allow_list.*not a Python literal"):
        parse_literal_tag({"finetune_compute_allow_list": hostile}, "finetune_compute_allow_list", list)
    assert not Path("/tmp/tunegate-pwned").exists()


def test_tag_of_wrong_type_names_the_tag():
    with pytest.raises(TagError, match="model_specific_defaults.*should be a dict"):
        model_specific_defaults(model(model_specific_defaults="['a']"))
    with pytest.raises(TagError, match="list of VM size strings"):
        allow_list(model(finetune_compute_allow_list="[1, 2]"), "finetune_compute_allow_list")


def test_missing_tag_is_none():
    assert allow_list(model(), "finetune_compute_allow_list") is None
    assert model_specific_defaults(model()) == {}


# ---------------------------------------------------------------- parameter merge and display name


def test_merge_without_tag_or_overrides_is_the_notebook():
    assert merge_finetune_parameters(FinetuneSettings(), {}) == NOTEBOOK_DEFAULTS


def test_model_defaults_override_notebook_and_user_overrides_both():
    tag = model_specific_defaults(
        model(
            model_specific_defaults=(
                "{'apply_deepspeed': 'false', 'learning_rate': 2e-5, 'deepspeed_stage': 3, 'max_seq_length': 2048}"
            )
        )
    )
    merged = merge_finetune_parameters(FinetuneSettings(learning_rate=1e-4, num_train_epochs=1), tag)
    assert merged["apply_deepspeed"] is False  # "false" from the tag, coerced
    assert merged["deepspeed_stage"] == "3"  # int from the tag, as the enum's string
    assert merged["max_seq_length"] == 2048
    assert merged["learning_rate"] == 1e-4 and merged["num_train_epochs"] == 1  # the user wins
    assert merged["per_device_train_batch_size"] == 1  # notebook default kept


def test_unknown_tag_keys_pass_through_and_bad_values_are_named():
    assert merge_finetune_parameters(FinetuneSettings(), {"precision": "16"})["precision"] == "16"
    with pytest.raises(ValueError, match="num_train_epochs"):
        merge_finetune_parameters(FinetuneSettings(), {"num_train_epochs": "many"})


def notebook_display_name(finetune_parameters, gpus_per_node, model_name):
    """The notebook's get_pipeline_display_name, verbatim in behaviour (string booleans)."""
    batch_size = (
        int(finetune_parameters.get("per_device_train_batch_size", 1))
        * int(finetune_parameters.get("gradient_accumulation_steps", 1))
        * int(gpus_per_node)
        * int(finetune_parameters.get("num_nodes_finetune", 1))
    )
    scheduler = finetune_parameters.get("lr_scheduler_type", "linear")
    deepspeed = finetune_parameters.get("apply_deepspeed", "false")
    ds_stage = finetune_parameters.get("deepspeed_stage", "2")
    ds_string = f"ds{ds_stage}" if deepspeed == "true" else "nods"
    lora_string = "lora" if finetune_parameters.get("apply_lora", "false") == "true" else "nolora"
    save_limit = finetune_parameters.get("save_total_limit", -1)
    seq_len = finetune_parameters.get("max_seq_length", -1)
    return (
        model_name
        + "-"
        + "ultrachat"
        + "-"
        + f"bs{batch_size}"
        + "-"
        + f"{scheduler}"
        + "-"
        + ds_string
        + "-"
        + lora_string
        + f"-save_limit{save_limit}"
        + f"-seqlen{seq_len}"
    )


def test_display_name_matches_the_notebook():
    notebook_params = {
        "num_train_epochs": 3,
        "per_device_train_batch_size": 1,
        "per_device_eval_batch_size": 1,
        "learning_rate": 5e-6,
        "lr_scheduler_type": "cosine",
        "apply_lora": "true",
        "apply_deepspeed": "true",
        "deepspeed_stage": 2,
        "gradient_accumulation_steps": 4,
    }
    ours = merge_finetune_parameters(FinetuneSettings(gradient_accumulation_steps=4), {})
    assert pipeline_display_name("Phi-3-mini-4k-instruct", ours, 4) == notebook_display_name(
        notebook_params, 4, "Phi-3-mini-4k-instruct"
    )
    assert pipeline_display_name("m", ours, 4) == "m-ultrachat-bs16-cosine-ds2-lora-save_limit-1-seqlen-1"


def test_display_name_without_deepspeed_or_lora():
    params = merge_finetune_parameters(
        FinetuneSettings(apply_lora=False, apply_deepspeed=False, max_seq_length=512), {}
    )
    assert pipeline_display_name("m", params, 1) == "m-ultrachat-bs1-cosine-nods-nolora-save_limit-1-seqlen512"


# ---------------------------------------------------------------- metric gate


SAME_EVAL = "eval-fp-1"


def champion(eval_loss: str | None, eval_fingerprint: str | None = SAME_EVAL) -> ModelVersion:
    tags = {} if eval_loss is None else {"eval_loss": eval_loss}
    if eval_fingerprint:
        tags["eval_fingerprint"] = eval_fingerprint
    return ModelVersion(name="m-ft", version="3", tags=tags)


def test_gate_passes_when_better_than_base_and_no_champion():
    result = evaluate_gate({"eval_loss": 1.0, "base_eval_loss": 2.0, "train_loss": 0.9}, GateSettings())
    assert result.passed and any("no champion" in r for r in result.reasons)


@pytest.mark.parametrize(
    ("metrics", "settings", "why"),
    [
        ({"eval_loss": 2.1, "base_eval_loss": 2.0}, GateSettings(), "does not beat base"),
        ({"eval_loss": 1.9, "base_eval_loss": 2.0}, GateSettings(min_improvement_over_base=0.5), "does not beat base"),
        ({"eval_loss": 1.0, "base_eval_loss": 2.0}, GateSettings(max_eval_loss=0.5), "max_eval_loss"),
        (
            {"eval_loss": 1.0, "base_eval_loss": 2.0, "train_loss": 3.0},
            GateSettings(max_train_loss=2.0),
            "max_train_loss",
        ),
        ({"eval_loss": 1.0, "base_eval_loss": 2.0}, GateSettings(max_train_loss=2.0), "max_train_loss"),  # missing
        ({"eval_loss": math.nan, "base_eval_loss": 2.0}, GateSettings(), "not finite"),
        ({"base_eval_loss": 2.0}, GateSettings(), "missing"),
        ({"eval_loss": 1.0}, GateSettings(), "base_eval_loss missing"),
    ],
)
def test_gate_failures_say_why(metrics, settings, why):
    result = evaluate_gate(metrics, settings)
    assert not result.passed and any(why in r for r in result.failures), result.reasons


def test_gate_checks_are_typed_and_a_failed_one_reads_as_a_failure():
    champion = ModelVersion(name="m-ft", version="1", tags={"eval_loss": "0.6900", "eval_fingerprint": "fp"})
    metrics = {"eval_loss": 0.6976, "base_eval_loss": 2.0, "train_loss": 0.5}
    result = evaluate_gate(metrics, GateSettings(max_eval_loss=0.5), champion, eval_fingerprint="fp")
    by_name = {check.name: check for check in result.checks}
    assert set(by_name) == {"max_eval_loss", "beats_base", "beats_champion"}
    lost = by_name["beats_champion"]
    assert not lost.passed and lost.observed == 0.6976 and lost.threshold == pytest.approx(0.69)
    assert lost.message.startswith("eval_loss 0.6976 does not beat champion m-ft:1 (0.6900")
    assert not by_name["max_eval_loss"].passed and "is above max_eval_loss 0.5" in by_name["max_eval_loss"].message
    assert by_name["beats_base"].passed and by_name["beats_base"].message.startswith("eval_loss 0.6976 beats base")
    # the summary's reasons keep their spelling, derived from the checks
    assert result.reasons == [("ok: " if c.passed else "fail: ") + c.message for c in result.checks]
    assert result.failures == [by_name["max_eval_loss"].message, lost.message]


def test_a_failed_gate_says_by_how_much_and_what_to_change():
    champion = ModelVersion(name="m-ft", version="1", tags={"eval_loss": "0.6844", "eval_fingerprint": "fp"})
    metrics = {"eval_loss": 0.6976, "base_eval_loss": 2.0}
    message = stop_message(evaluate_gate(metrics, GateSettings(), champion, eval_fingerprint="fp"))
    assert message.startswith("Gate failed: eval_loss 0.6976 does not beat champion m-ft:1 (0.6844")
    assert "(0.0132 too high)" in message
    assert "To change: train longer or on more data (finetune.num_train_epochs, data.percent)" in message
    assert "gate.min_improvement_over_champion" in message and "gate.champion=advisory" in message
    base = stop_message(evaluate_gate({"eval_loss": 2.1, "base_eval_loss": 2.0}, GateSettings()))
    assert "(0.1000 too high)" in base and "gate.min_improvement_over_base" in base
    assert "champion" not in base  # only the advice for what failed


def test_the_same_model_does_not_beat_itself_through_its_recorded_tag():
    from tasks.register import lineage_tags
    from workspaces.ports import JobRef

    loss = 0.92005161707916  # rounded to 6 digits this is 0.920052: the same number "beat" its own tag
    gate = evaluate_gate({"eval_loss": loss, "base_eval_loss": 6.7}, GateSettings())
    tags = lineage_tags(model(), JobRef(name="job-1"), "fp", gate, "run-1", "eval-fp")
    champion = ModelVersion(name="m-ft", version="1", tags=tags)
    again = evaluate_gate(
        {"eval_loss": loss, "base_eval_loss": 6.7}, GateSettings(), champion, eval_fingerprint="eval-fp"
    )
    assert not again.passed and "does not beat champion" in again.failures[0]


def test_an_advisory_champion_check_is_shown_failed_but_does_not_stop_the_run():
    champion = ModelVersion(name="m-ft", version="1", tags={"eval_loss": "0.6844", "eval_fingerprint": "fp"})
    metrics = {"eval_loss": 0.6976, "base_eval_loss": 2.0}
    advisory = GateSettings(champion="advisory")
    gate = evaluate_gate(metrics, advisory, champion, eval_fingerprint="fp")
    lost = next(check for check in gate.checks if check.name == "beats_champion")
    assert gate.passed and not lost.passed and lost.advisory and gate.failures == []
    assert gate.advised_against == [lost.message] and "does NOT beat the champion" in gate.words()
    assert any(reason.startswith("fail (advisory, a person decides): eval_loss 0.6976") for reason in gate.reasons)
    assert not beats_champion(gate, 0.0)  # auto-if-better could never approve it on its own
    # the base model and the loss limits still stop the run
    worse = {"eval_loss": 2.1, "base_eval_loss": 2.0}
    assert not evaluate_gate(worse, advisory, champion, eval_fingerprint="fp").passed
    unreadable = ModelVersion(name="m-ft", version="1", tags={"eval_loss": "n/a"})
    assert not evaluate_gate(metrics, advisory, unreadable).passed  # fails closed all the same


def test_one_rule_decides_better_for_the_gate_and_the_approval_policy():
    champion = ModelVersion(name="m-ft", version="1", tags={"eval_loss": "1.0", "eval_fingerprint": "fp"})
    gate = evaluate_gate({"eval_loss": 0.9, "base_eval_loss": 2.0}, GateSettings(), champion, eval_fingerprint="fp")
    assert gate.passed and beats_champion(gate, 0.05) and not beats_champion(gate, 0.1)  # 0.9 < 1.0 - 0.1 is false
    auto = ApprovalSettings(policy="auto-if-better", margin=0.1)
    assert policy_decision(auto, gate) is None  # not by the policy's margin: a person decides
    other_data = evaluate_gate(
        {"eval_loss": 0.1, "base_eval_loss": 2.0}, GateSettings(), champion, eval_fingerprint="x"
    )
    assert not other_data.comparable and not beats_champion(other_data, 0.0)


def test_gate_compares_with_a_champion_measured_on_the_same_eval_data():
    metrics = {"eval_loss": 1.0, "base_eval_loss": 2.0}
    same = evaluate_gate(metrics, GateSettings(), champion("1.2"), eval_fingerprint=SAME_EVAL)
    assert same.passed and same.comparison == "same-data" and same.champion_eval_loss == 1.2
    assert not evaluate_gate(metrics, GateSettings(), champion("1.0"), eval_fingerprint=SAME_EVAL).passed  # equal
    assert not evaluate_gate(
        metrics, GateSettings(min_improvement_over_champion=0.3), champion("1.2"), eval_fingerprint=SAME_EVAL
    ).passed


def test_a_champion_re_evaluated_on_this_runs_split_is_compared_on_that_number():
    # recorded 0.5 on its own (easier) split; on this run's split it scores 1.3: the candidate's 1.0 is better
    metrics = {"eval_loss": 1.0, "base_eval_loss": 2.0, "champion_eval_loss": 1.3}
    result = evaluate_gate(
        metrics, GateSettings(), champion("0.5", "other"), eval_fingerprint=SAME_EVAL, evaluated_champion="m-ft:3"
    )
    assert result.passed and result.comparison == "same-split" and result.champion_eval_loss == 1.3
    assert "re-evaluated on this run's test split" in result.reasons[-1]
    # the job evaluated another version than the champion of now: its number does not count
    stale = evaluate_gate(
        metrics, GateSettings(), champion("0.5", "other"), eval_fingerprint=SAME_EVAL, evaluated_champion="m-ft:2"
    )
    assert stale.comparison == "not-comparable"


def test_a_champion_measured_on_other_data_is_not_comparable():
    metrics = {"eval_loss": 1.0, "base_eval_loss": 2.0}
    for other in (champion("0.2", "another-sample"), champion("1.5", None), champion(None)):
        result = evaluate_gate(metrics, GateSettings(), other, eval_fingerprint=SAME_EVAL)
        assert result.passed and result.comparison == "not-comparable" and not result.comparable
        assert "not comparable" in result.reasons[-1] and "a person decides" in result.reasons[-1]


@pytest.mark.parametrize("bad", ["n/a", "nan", "inf", ""])
def test_a_malformed_champion_metric_fails_the_gate_with_its_name(bad):
    result = evaluate_gate({"eval_loss": 1.0, "base_eval_loss": 2.0}, GateSettings(), champion(bad))
    assert not result.passed
    assert any("champion m-ft:3 tag eval_loss=" in reason for reason in result.failures), result.reasons


def test_a_champion_that_cannot_be_read_fails_the_gate():
    result = evaluate_gate(
        {"eval_loss": 1.0, "base_eval_loss": 2.0}, GateSettings(), None, champion_error="registry unreachable: 503"
    )
    assert not result.passed and "could not read the champion" in result.failures[0]
    assert "registry unreachable: 503" in result.failures[0]


# ---------------------------------------------------------------- approval policies


def gate_result(eval_loss: float, champion_loss: float | None, champion_eval_data: str = SAME_EVAL):
    return evaluate_gate(
        {"eval_loss": eval_loss, "base_eval_loss": 5.0},
        GateSettings(),
        champion(str(champion_loss), champion_eval_data) if champion_loss is not None else None,
        eval_fingerprint=SAME_EVAL,
    )


def test_auto_policy_approves_as_policy():
    decision = policy_decision(ApprovalSettings(policy="auto"), gate_result(1.0, None))
    assert decision.approved and decision.approver == "policy:auto"


def test_auto_if_better_decides_only_when_clearly_better():
    settings = ApprovalSettings(policy="auto-if-better", margin=0.1)
    assert "no champion" in policy_decision(settings, gate_result(1.0, None)).comment
    # better on loss alone is not enough: the answers must win beyond chance too (the interval's lower end > 0.5)
    assert policy_decision(settings, gate_result(1.0, 1.2)) is None
    assert policy_decision(settings, gate_result(1.0, 1.2), evaluated(0.7, (0.45, 0.9))) is None
    better = policy_decision(settings, gate_result(1.0, 1.2), evaluated(0.8, (0.6, 0.95)))
    assert better.approved and "beats champion" in better.comment and "0.60-0.95" in better.comment
    assert policy_decision(settings, gate_result(1.15, 1.2)) is None  # inside the margin: a person decides
    # far better on paper, but the champion was measured on other rows: not comparable, a person decides
    assert policy_decision(settings, gate_result(0.1, 1.2, champion_eval_data="other-sample")) is None


def evaluated(win_rate: float, interval: tuple[float, float]) -> Evaluation:
    return Evaluation(passed=True, samples=16, candidate="m:2", champion="m:1", win_rate=win_rate, win_rate_ci=interval)


def test_manual_policy_never_decides_alone():
    assert policy_decision(ApprovalSettings(policy="manual"), gate_result(0.1, 5.0)) is None


# ---------------------------------------------------------------- deploy rules


AZURE_DEPLOYMENT_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{2,31}$")


def test_deployment_names_are_one_per_model_name_and_version():
    def name(model: str, version: str, prefix: str = "ft-") -> str:
        return deployment_name(prefix, ModelVersion(name=model, version=version))

    assert name("fc", "1") == "ft-fc-1" and name("fd", "1") == "ft-fd-1"  # two models, version 1 each: two names
    assert name("fc", "1") == name("fc", "1")  # deterministic: a retried deploy finds its deployment
    long_a, long_b = "Phi-3-mini-4k-instruct-ultrachat-200k", "Phi-3-mini-4k-instruct-ultrachat-200k-v2"
    names = {name(m, v) for m in (long_a, long_b, "Phi-3.5/mini_chat", "x") for v in ("1", "2", "17", "9" * 40)}
    assert len(names) == 16  # no two collide, even when cut to Azure's length
    for candidate in names | {name("x", "1", prefix="v"), name("9lives", "3", prefix="a")}:
        assert AZURE_DEPLOYMENT_NAME.fullmatch(candidate), candidate


def test_instance_type_must_be_in_inference_allow_list():
    check_instance_type("standard_nc6s_v3", ["Standard_NC6s_v3"])
    check_instance_type("anything", None)
    with pytest.raises(DeploymentRefused, match="inference_compute_allow_list"):
        check_instance_type("Standard_DS3_v2", ["Standard_NC6s_v3"])


# ---------------------------------------------------------------- which errors are retried


class AzureLikeError(Exception):
    def __init__(self, status_code):
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TransientWorkspaceError("throttled"), True),
        (WorkspaceError("quota exceeded"), False),
        (ValueError("bad input"), False),
        (httpx.ConnectError("refused"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (AzureLikeError(429), True),
        (AzureLikeError(503), True),
        (AzureLikeError(403), False),
        (AzureLikeError(400), False),
        (type("ServiceRequestError", (Exception,), {})("dns"), True),
        (RuntimeError("bug"), False),
    ],
)
def test_only_transient_errors_are_retried(exc, transient):
    assert is_transient(exc) is transient


# ---------------------------------------------------------------- the approval form


def test_the_decision_is_a_required_choice_without_default():
    from pydantic import ValidationError

    from tasks.approval import Decision

    schema = Decision.model_json_schema()
    assert "decision" in schema["required"] and "default" not in schema["properties"]["decision"]
    assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]
    with pytest.raises(ValidationError):
        Decision(approver="dana", comment="filled in everything but the choice")
    assert Decision(decision="approve", approver="dana").approved
    assert not Decision(decision="reject", approver="dana").approved


def test_the_form_text_is_short_and_links_the_full_review():
    from tasks.approval import form_description

    gate = gate_result(1.0, 1.2)
    text = form_description(ModelVersion(name="m-ft", version="4"), gate, "http://ui/artifacts/artifact/1")
    assert "m-ft version 4" in text and "eval_loss **1.0000**" in text and "champion m-ft:3: 1.2000" in text
    assert "http://ui/artifacts/artifact/1" in text and "approve" in text
    assert len(text.splitlines()) <= 10 and len(text) < 600  # readable in the dialog without scrolling
    other = form_description(ModelVersion(name="m-ft", version="4"), gate_result(1.0, 1.2, "other"), None)
    assert "not comparable" in other


def test_trainer_threads_leave_a_core_free_and_count_busy_cores_out(monkeypatch):
    from workspaces.local.training_parts import torch_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert torch_threads(cores=2, load=0.0) == 1
    assert torch_threads(cores=16, load=0.2) == 15
    assert torch_threads(cores=16, load=10.4) == 6
    assert torch_threads(cores=2, load=7.0) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert torch_threads(cores=16, load=0.0) is None  # the user's setting wins


def test_a_waiting_run_is_named_by_id_prefix_or_name_and_ambiguity_is_refused():
    from tasks.reviews import ReviewError, pick_run

    waiting = [("0a1b2c3d-0000", "clever-otter"), ("0a1f0000-1111", "brave-lynx"), ("9f000000-2222", "Clever-otter-2")]
    assert pick_run("clever-otter", waiting) == "0a1b2c3d-0000"  # a name wins over a prefix
    assert pick_run("0A1B", waiting) == "0a1b2c3d-0000"
    assert pick_run("9f", waiting) == "9f000000-2222"
    with pytest.raises(ReviewError, match="matches 2 waiting runs: clever-otter \\(0a1b2c3d\\), brave-lynx") as error:
        pick_run("0a1", waiting)
    assert error.value.usage
    with pytest.raises(ReviewError, match="no run waiting .* 'nope'"):
        pick_run("nope", waiting)
    with pytest.raises(ReviewError, match="no run waiting"):
        pick_run("  ", waiting)


def test_an_approval_timeout_reads_as_local_time_and_time_left():
    from datetime import UTC, datetime, timedelta

    from tasks.reviews import describe_timeout

    now = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    soon = describe_timeout(now + timedelta(hours=3, minutes=12, seconds=30), now)
    assert soon.endswith("(in 3 h 12 min)") and ":" in soon
    assert describe_timeout(now + timedelta(minutes=5), now).endswith("(in 5 min)")
    assert describe_timeout(now - timedelta(minutes=1), now).endswith("(passed)")
    assert describe_timeout(None, now) == "no timeout"


def test_one_approval_deadline_holds_across_invalid_answers():
    from pydantic import ValidationError

    from tasks.approval.asking import Decision, answer_within

    now = [0.0]
    asked: list[tuple[int, int]] = []
    invalid: list[str] = []

    def ask(round_: int, left_s: int) -> Decision:
        asked.append((round_, left_s))
        now[0] += 40  # the reviewer took 40 s to send an answer the form should not have let through
        Decision.model_validate({"decision": "approve", "approver": " "})  # raises: no name
        raise AssertionError("unreachable")

    def on_invalid(error: ValidationError) -> None:
        invalid.append(error.errors()[0]["msg"])

    assert answer_within(100, ask, on_invalid, clock=lambda: now[0]) is None  # the deadline passed: a reject
    assert asked == [(1, 100), (2, 60), (3, 20)] and len(invalid) == 3  # never a fresh 100 s


def test_a_valid_answer_within_the_deadline_is_the_decision():
    from tasks.approval.asking import Decision, answer_within

    answer = Decision(decision="reject", approver="ana", comment="too slow")
    assert answer_within(100, lambda round_, left: answer, lambda error: None, clock=lambda: 0.0) is answer
