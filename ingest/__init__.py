"""Parse papers, chunk them to the embedder's limit, embed them, and store them in Chroma + BM25."""

import assistant  # noqa: F401  (applies the offline environment first)
