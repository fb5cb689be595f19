"""Everything about the model server.

The OpenAI-compatible client the rest of the project uses, the embedded server
(transformers + peft) that mirrors vLLM's API including runtime LoRA loading, adapter
files on disk, vLLM launch settings, and the tiny locally built demo/test models.
"""
