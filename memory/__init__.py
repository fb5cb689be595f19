"""Long-term user memory on mem0: recall before answering, remember after, list/forget."""
