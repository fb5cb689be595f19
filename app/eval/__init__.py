"""Answer-quality evaluation: ask a dataset's questions through the agent the API uses.

``python -m app.eval --dataset DIR --json`` ingests the dataset's documents into a store of
its own, asks every question as a user would (one new thread each), and reports answer
quality: token recall and F1 against the reference, valid citations, declining when the
documents lack the answer (and not when they hold it), repetition and latency.
"""
