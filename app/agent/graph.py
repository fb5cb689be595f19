"""Builds the agent graph.

``graph`` (no checkpointer) is what LangGraph's tools open; the API compiles the same
builder with its per-thread checkpointer.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from app.agent import nodes
from app.agent.context import Context
from app.agent.state import InputState, State


def build() -> StateGraph[State, Context, InputState, State]:
    """The agent's graph, not yet compiled."""
    builder = StateGraph(State, input_schema=InputState, context_schema=Context)
    builder.add_node("recall", nodes.recall)
    builder.add_node("understand", nodes.understand)
    builder.add_node("retrieve", nodes.retrieve)
    builder.add_node("not_found", nodes.not_found)
    builder.add_node("generate", nodes.generate)
    builder.add_node("remember", nodes.remember)
    builder.add_node("store", nodes.store)
    builder.add_edge(START, "recall")
    builder.add_edge("recall", "understand")
    builder.add_conditional_edges("understand", nodes.after_understand)
    builder.add_conditional_edges("retrieve", nodes.after_retrieve)
    builder.add_edge("not_found", "remember")
    builder.add_edge("generate", "remember")
    builder.add_edge("remember", "store")
    builder.add_edge("store", END)
    return builder


def compile_graph(checkpointer: Any = None) -> Any:
    """The compiled agent, with ``checkpointer`` keeping each thread's history."""
    return build().compile(checkpointer=checkpointer, name="flywheel")


graph = compile_graph()
