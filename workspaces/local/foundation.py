"""The local workspace's own foundation model: a tiny Phi-3 built on first use (workspaces/local/model.py), registered
with the tags an azureml registry model carries, in the same string forms."""

from __future__ import annotations

from workspaces.local.compute import LOCAL_SIZES

LOCAL_FOUNDATION = "tiny-phi3-chat"
# the same string forms an azureml registry model carries
FOUNDATION_TAGS = {
    "finetune_compute_allow_list": str(list(LOCAL_SIZES)),
    "inference_compute_allow_list": str(list(LOCAL_SIZES)),
    "model_specific_defaults": (
        "{'apply_deepspeed': 'false', 'apply_lora': 'true', 'lora_r': 16, 'lora_alpha': 32, "
        "'learning_rate': 0.01, 'lr_scheduler_type': 'linear', 'num_train_epochs': 3, "
        "'per_device_train_batch_size': 8, 'per_device_eval_batch_size': 16, 'max_seq_length': 128, "
        # a from-scratch model has no embeddings worth freezing: LoRA on the layers, embeddings and head in full
        "'lora_modules_to_save': 'embed_tokens,lm_head'}"
    ),
    "task": "chat-completion",
}
