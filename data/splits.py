"""The splits of ultrachat_200k (and of the generated dataset), and the ones the fine-tune reads."""

SPLITS = ("train_sft", "test_sft", "train_gen", "test_gen")
# train_sft trains, test_sft evaluates, test_gen feeds the smoke request
WRITTEN_SPLITS = ("train_sft", "test_sft", "test_gen")
