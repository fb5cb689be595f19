"""Documents in, ranked chunks out.

Parsing, chunking, embedding, the Qdrant collections, hybrid dense + keyword search
with fusion, reranking, and retrieval evaluation.
"""
