"""Parse papers, chunk them to the embedder's limit, embed them, and store them in Chroma + BM25."""
