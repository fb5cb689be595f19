"""From logged turns to a better LoRA adapter.

Judge, rewards, datasets, GRPO/DPO training with TRL + peft, the evaluation gate, and
publish / promote / rollback into the running model server.
"""
