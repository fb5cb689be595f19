"""The product: the LangGraph agent, the HTTP API, users and auth, and the SQL store.

The store keeps every turn, feedback, judgment and adapter version; it is what the
trainer learns from. Heavy libraries are imported lazily so the API starts quickly.
"""
