"""Bring your own model: the folder checks, the tags derived from its size, the device plan (with made-up device
facts, not a patched torch), and `tunegate model import` of a small Llama folder this test writes. The end-to-end
run on an imported model is tests/test_cli_e2e.py::test_full_run_end_to_end_then_nothing_left."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tests.hf_models import write_tiny_llama
from tests.test_cli_e2e import tunegate
from workspaces.errors import WorkspaceError
from workspaces.local.devices import DeviceFacts, serving_device, training_plan
from workspaces.local.imports import (
    CPU_FINETUNE_MAX_PARAMS,
    ModelFolder,
    ModelFolderError,
    derived_tags,
    inspect_model_folder,
)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-chat")


def copy_of(folder: Path, into: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, into))


def test_a_causal_lm_folder_is_read_without_loading_it(llama):
    found = inspect_model_folder(llama)
    assert found.architecture == "LlamaForCausalLM" and found.model_type == "llama"
    assert found.weight_files == ("model.safetensors",) and found.max_positions == 512
    from transformers import AutoModelForCausalLM

    # from the safetensors header alone, what the loaded model counts (untied head: every tensor is stored)
    assert found.parameters == AutoModelForCausalLM.from_pretrained(llama).num_parameters() > 100_000


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("no-folder", "is not a folder"),
        ("no-config", "no config.json"),
        ("not-causal", "not a causal language model: its config.json names the architectures BertForMaskedLM"),
        ("no-tokenizer", "no tokenizer"),
        ("no-template", "no chat template"),
        ("no-weights", "no weights (*.safetensors)"),
        ("bin-weights", "found pytorch_model.bin: load it and save_pretrained(folder) writes safetensors"),
        ("bad-weights", "not a readable safetensors file"),
    ],
)
def test_a_folder_that_cannot_be_fine_tuned_is_refused_saying_why(llama, tmp_path, damage, says):
    folder = copy_of(llama, tmp_path / "model")
    if damage == "no-folder":
        folder = tmp_path / "nothing-here"
    elif damage == "no-config":
        (folder / "config.json").unlink()
    elif damage == "not-causal":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    elif damage == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
    elif damage == "no-template":
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer_config.pop("chat_template", None)
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        for name in ("chat_template.jinja", "chat_template.json"):
            (folder / name).unlink(missing_ok=True)
    elif damage in ("no-weights", "bin-weights"):
        (folder / "model.safetensors").unlink()
        if damage == "bin-weights":
            (folder / "pytorch_model.bin").write_bytes(b"\0" * 16)
    elif damage == "bad-weights":
        (folder / "model.safetensors").write_bytes(b"\xff" * 32)
    with pytest.raises(ModelFolderError) as refused:
        inspect_model_folder(folder)
    assert says in str(refused.value)


def sized(parameters: int) -> ModelFolder:
    return ModelFolder(
        path=Path("/models/x"),
        architecture="Phi3ForCausalLM",
        model_type="phi3",
        parameters=parameters,
        max_positions=4096,
        weight_files=("model-00001-of-00002.safetensors",),
    )


def test_tags_follow_the_models_size_in_the_registrys_string_forms():
    small = derived_tags(sized(40_000_000))
    assert ast.literal_eval(small["finetune_compute_allow_list"]) == ["local-cpu", "local-cuda"]
    assert ast.literal_eval(small["model_specific_defaults"])["max_seq_length"] == 512
    # Phi-3-mini (3.8 B): too slow to fine-tune or serve on a CPU; LoRA defaults for a pretrained model of that size
    phi3_mini = derived_tags(sized(3_821_079_552))
    assert ast.literal_eval(phi3_mini["finetune_compute_allow_list"]) == ["local-cuda"]
    assert ast.literal_eval(phi3_mini["inference_compute_allow_list"]) == ["local-cuda"]
    defaults = ast.literal_eval(phi3_mini["model_specific_defaults"])
    assert defaults["apply_lora"] == "true" and defaults["learning_rate"] == 2e-4 and defaults["num_train_epochs"] == 1
    assert defaults["per_device_train_batch_size"] * defaults["gradient_accumulation_steps"] == 8
    assert defaults["gradient_checkpointing"] == "true" and defaults["max_seq_length"] == 2048
    # just over the CPU line: trains on a GPU only, still serves on a CPU
    middle = derived_tags(sized(CPU_FINETUNE_MAX_PARAMS + 1))
    assert ast.literal_eval(middle["finetune_compute_allow_list"]) == ["local-cuda"]
    assert "local-cpu" in ast.literal_eval(middle["inference_compute_allow_list"])


A100 = DeviceFacts(cuda_devices=1, bf16=True, names=("NVIDIA A100-SXM4-80GB",))
TWO_V100 = DeviceFacts(cuda_devices=2, bf16=False, names=("Tesla V100-SXM2-16GB",) * 2)


def test_cpu_jobs_train_as_before_whatever_the_machine_has():
    plan = training_plan(TWO_V100, gpus=0, params={"precision": "16", "gradient_checkpointing": "true"})
    assert (plan.device, plan.processes, plan.precision, plan.gradient_checkpointing) == ("cpu", 1, "fp32", False)
    assert plan.trainer_arguments()["use_cpu"] is True and plan.describe() == "CPU, fp32"


def test_gpu_jobs_use_half_precision_the_device_has_and_one_process_per_gpu():
    one = training_plan(A100, gpus=1, params={})
    assert (one.device, one.processes, one.precision, one.gradient_checkpointing) == ("cuda", 1, "bf16", True)
    assert one.trainer_arguments()["bf16"] and not one.trainer_arguments()["fp16"]
    assert one.trainer_arguments()["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    two = training_plan(TWO_V100, gpus=2, params={"gradient_checkpointing": "false"})
    assert (two.processes, two.precision, two.gradient_checkpointing, two.distributed) == (2, "fp16", False, True)
    assert two.trainer_arguments()["ddp_find_unused_parameters"] is False
    assert two.describe() == "CUDA, 2 GPUs data-parallel, fp16"
    # the size says 8 GPUs per node, this machine has 2: both, not 8
    assert training_plan(TWO_V100, gpus=8, params={}).processes == 2
    assert training_plan(A100, gpus=1, params={"precision": "32"}).precision == "fp32"


def test_local_cuda_without_a_gpu_is_refused_naming_the_cpu_size():
    with pytest.raises(WorkspaceError, match="compute.size=local-cpu"):
        training_plan(DeviceFacts(), gpus=1, params={})
    with pytest.raises(WorkspaceError, match="endpoint.instance_type=local-cpu"):
        serving_device("local-cuda", DeviceFacts())
    assert serving_device("local-cuda", A100) == "cuda" and serving_device("local-cpu", A100) == "cpu"


def test_replies_stop_at_the_models_own_end_of_turn(llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workspaces.local.model import stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(llama)
    model = AutoModelForCausalLM.from_pretrained(llama)
    assert "<|end|>" not in tokenizer.get_vocab()
    assert stop_token_ids(model, tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


@pytest.mark.slow
def test_model_import_registers_the_folder_with_its_tags(llama, tmp_path):
    state = f"workspace.state_dir={tmp_path / 'state'}"
    done = tunegate("model", "import", str(llama), "--name", "tiny-llama", "--tag", "note=mine", "--set", state)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("registered tiny-llama version 1: LlamaForCausalLM, 0.")
    assert "run it: tunegate run --set model.name=tiny-llama --set compute.size=local-cpu" in done.stdout
    from workspaces.local.workspace import LocalWorkspace

    model = LocalWorkspace(tmp_path / "state" / "workspace").registry.get_foundation_model("tiny-llama")
    assert model.version == "1" and model.tags["note"] == "mine" and model.tags["architecture"] == "LlamaForCausalLM"
    assert ast.literal_eval(model.tags["finetune_compute_allow_list"]) == ["local-cpu", "local-cuda"]

    wrong_version = tunegate("model", "import", str(llama), "--name", "tiny-llama", "--version", "1", "--set", state)
    assert wrong_version.returncode == 2 and "the next of 'tiny-llama' is 2" in wrong_version.stderr
    bad_tag = tunegate(
        "model", "import", str(llama), "--name", "x", "--tag", "model_specific_defaults=[1", "--set", state
    )
    assert bad_tag.returncode == 2 and "model_specific_defaults" in bad_tag.stderr
    builtin = tunegate("model", "import", str(llama), "--name", "tiny-phi3-chat", "--set", state)
    assert builtin.returncode == 2 and "built-in model's name" in builtin.stderr


def test_a_model_that_pads_with_its_end_of_turn_token_still_learns_to_end_replies(llama):
    from transformers import AutoTokenizer

    from workspaces.local.training_parts import causal_collator

    tokenizer = AutoTokenizer.from_pretrained(llama)
    assert tokenizer.pad_token is None  # as many chat models ship
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    batch = causal_collator(tokenizer)(
        [{"input_ids": [5, 6, end], "attention_mask": [1, 1, 1]}, {"input_ids": [5, end], "attention_mask": [1, 1]}]
    )
    assert tokenizer.pad_token_id == end  # padding borrows the end-of-turn id ...
    assert batch["labels"].tolist() == [[5, 6, end], [5, end, -100]]  # ... but only padding leaves the loss


# ---------------------------------------------------------------- a hostile folder or name (issue 21)


def test_a_name_that_is_a_path_is_refused_before_any_file_is_touched(llama, tmp_path):
    state = tmp_path / "a" / "state"
    victims = tmp_path / "a" / "victims"
    (victims / "victim-1").mkdir(parents=True)
    (victims / "victim-1" / "precious.txt").write_text("keep me")
    (state / "workspace" / "imports").mkdir(parents=True)  # as any earlier import leaves it
    for name in ("../../../victims/victim", "../victims/victim", "/etc/x", "a/b", ".."):
        done = tunegate("model", "import", str(llama), "--name", name, "--set", f"workspace.state_dir={state}")
        assert done.returncode == 2 and "is not valid" in done.stderr and "Traceback" not in done.stderr, name
    assert (victims / "victim-1" / "precious.txt").read_text() == "keep me"
    version = tunegate("model", "import", str(llama), "--name", "ok", "--version", "../1")
    assert version.returncode == 2 and "version name '../1' is not valid" in version.stderr


def test_a_finetuned_name_that_is_a_path_is_refused_when_the_profile_loads():
    from flows.params import ProfileError, load_profile

    for bad in ("../../x", "a/b", "..", "-x"):
        with pytest.raises(ProfileError, match="finetuned_name"):
            load_profile(None, [f"model.finetuned_name={bad}"])
    with pytest.raises(ProfileError, match="model.version"):
        load_profile(None, ["model.version=../2"])
    assert load_profile(None, ["model.finetuned_name=my-model_v2.1"]).model.registered_name() == "my-model_v2.1"


def test_links_that_leave_the_folder_are_refused_naming_them(llama, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "id_rsa").write_text("PRIVATE KEY")
    folder = copy_of(llama, tmp_path / "linked")
    (folder / "notes.txt").symlink_to(outside / "id_rsa")
    with pytest.raises(ModelFolderError, match=r"links that point outside it: notes.txt -> .*id_rsa.*cp -L"):
        inspect_model_folder(folder)
    (folder / "notes.txt").unlink()
    (folder / "extra").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelFolderError, match="extra ->"):
        inspect_model_folder(folder)
    (folder / "extra").unlink()
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # inside, but a folder: it would recurse
    with pytest.raises(ModelFolderError, match="a folder"):
        inspect_model_folder(folder)
    (folder / "loop").unlink()
    (folder / "same.json").symlink_to(folder / "config.json")  # a link to a file inside is copied as the file
    assert inspect_model_folder(folder).architecture == "LlamaForCausalLM"


def test_a_hugging_face_cache_snapshot_whose_files_link_to_its_blobs_is_accepted(llama, tmp_path):
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for index, file in enumerate(sorted(p for p in llama.iterdir() if p.is_file())):
        blob = repo / "blobs" / f"blob{index}"
        blob.write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob.name)
    assert inspect_model_folder(snapshot).architecture == "LlamaForCausalLM"


def test_a_config_that_disagrees_with_its_weights_is_refused(llama, tmp_path):
    folder = copy_of(llama, tmp_path / "huge")
    config = json.loads((folder / "config.json").read_text())
    for key, value, says in (
        ("vocab_size", 10**12, "vocab_size=1000000000000: expected a whole number from 1 to 4,000,000"),
        ("vocab_size", config["vocab_size"] + 1, "the config does not belong to these weights"),
        ("hidden_size", "64", "hidden_size='64'"),
    ):
        (folder / "config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(ModelFolderError, match=re_escape(says)):
            inspect_model_folder(folder)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_chat_template_that_renders_for_ever_is_refused_at_import_and_stopped_at_serving(llama, tmp_path):
    import time

    from transformers import AutoTokenizer

    from workspaces.local.imports import check_chat_template
    from workspaces.local.model import TemplateTooSlow, render_prompts

    folder = copy_of(llama, tmp_path / "slow-template")
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["chat_template"] = (
        "{% for a in range(100000) %}{% for b in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    started = time.monotonic()
    with pytest.raises(ModelFolderError, match="chat template took over 1 s"):
        check_chat_template(folder, max_time_s=1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with pytest.raises(TemplateTooSlow):
        render_prompts(tokenizer, [[{"role": "user", "content": "hi"}]], max_time_s=1)
    assert time.monotonic() - started < 60  # both stopped, not the minutes the template would take
    check_chat_template(llama)  # a sound template passes
