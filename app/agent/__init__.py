"""The LangGraph agent: recall → understand → retrieve → generate → remember → store."""
