"""Long-term user memory on mem0: recall before answering, remember after, list/forget.

``import memory`` is cheap: mem0 and the embedder load on first use (or ``warm_up()``).
"""

from memory.settings import MemorySettings, get_settings
from memory.store import MemoryItem, UserMemory

__all__ = ["MemoryItem", "MemorySettings", "UserMemory", "get_settings"]
