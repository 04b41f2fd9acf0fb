"""The keyword store boundary, and its default: a BM25 index (bm25s + PyStemmer) persisted
beside Chroma and replaced atomically.

Each build writes a new version folder (`.NAME.v<stamp>`) and then repoints the symlink `NAME`
at it with one rename, so a reader sees the old index or the new one, never a mix or nothing.
The previous version is kept until the next build, for readers that resolved the link before
the switch; a reader notices the switch and reloads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

IDS_FILE = "chunk_ids.json"
STATE_FILE = "state.json"
TOKENIZE_PAGE = 2000


def fingerprint(chunk_ids: Iterable[str], paper_hashes: Iterable[str]) -> str:
    """Identifies one exact index content; BM25 and Chroma must agree on it."""
    digest = hashlib.sha256()
    for value in sorted(chunk_ids) + sorted(set(paper_hashes)):
        digest.update(value.encode("utf-8") + b"\0")
    return digest.hexdigest()


def paper_of(chunk_id: str) -> str:
    """The paper a chunk id ("paper#index") belongs to."""
    return chunk_id.rsplit("#", 1)[0]


@dataclass(frozen=True)
class KeywordHit:
    chunk_id: str
    score: float


# (paper id, paper hash, [(chunk id, chunk text)]): one paper's whole version, as ingest writes it.
PaperChunks = tuple[str, str, Sequence[tuple[str, str]]]


class KeywordStore(Protocol):
    """Where keyword search lives: the local BM25 files, or a database every replica reads.

    Ingest writes each batch of papers and each removal right after Chroma (`write_papers`,
    `delete_papers`), then `build_from` makes the store hold exactly Chroma's chunks and records
    their `fingerprint`; a store whose recorded state differs from Chroma's is rebuilt.
    """

    @property
    def where(self) -> str:
        """Where it is, for messages."""
        ...

    def search(self, query: str, k: int) -> list[KeywordHit]: ...

    def state(self) -> dict[str, Any] | None:
        """{"fingerprint", "chunks"} recorded by the last complete build; None: none."""
        ...

    def build_from(self, rows: Iterable[tuple[str, str, str]]) -> str:
        """Hold exactly these (chunk id, text, paper hash) rows; returns their fingerprint."""
        ...

    def write_papers(self, papers: Sequence[PaperChunks]) -> None: ...

    def confirm(self, expected: Callable[[], str]) -> bool:
        """Record `expected()` (Chroma's fingerprint, a metadata scan) as the state if the store
        can tell cheaply that it holds exactly that content; False: `build_from` is needed."""
        ...

    def delete_papers(self, paper_ids: Sequence[str]) -> None: ...

    def sole_writer(self) -> AbstractContextManager[bool]:
        """Held for an ingest or a removal: whether no other process (another replica) writes
        this store meanwhile. The data directory's lock covers one machine only."""
        ...

    def remove(self) -> None:
        """Delete everything it holds."""
        ...

    def reload(self) -> None:
        """After another writer changed it: the next search sees the change."""
        ...


class KeywordIndex:
    """The local BM25 index (the default store): rebuilt whole by `build_from` at the end of
    each ingest; the per-batch writes are left to that rebuild."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: tuple[str | None, Any, list[str]] | None = None

    @property
    def where(self) -> str:
        return str(self.folder)

    def write_papers(self, papers: Sequence[PaperChunks]) -> None:
        """Nothing: the index is rebuilt whole once the ingest's batches are written."""

    def confirm(self, expected: Callable[[], str]) -> bool:
        """False: the per-batch writes are not kept, so only a rebuild brings it up to date."""
        return False

    def delete_papers(self, paper_ids: Sequence[str]) -> None:
        """Nothing: the index is rebuilt whole after a removal."""

    def sole_writer(self) -> AbstractContextManager[bool]:
        """True: the files are the data directory's, whose ingest lock the writer holds."""
        return nullcontext(True)

    @cached_property
    def _stemmer(self) -> Any:
        import Stemmer

        return Stemmer.Stemmer("english")

    def _tokenize(self, texts: list[str]) -> Any:
        import bm25s

        return bm25s.tokenize(
            texts, stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False
        )

    def build(self, chunk_ids: list[str], texts: list[str], state_fingerprint: str) -> None:
        self._build(zip(chunk_ids, texts, strict=True), lambda: state_fingerprint)

    def build_from(self, rows: Iterable[tuple[str, str, str]]) -> str:
        """Index (chunk id, text, paper hash) rows; returns the content fingerprint it records."""
        chunk_ids: list[str] = []
        hashes: set[str] = set()

        def pairs() -> Iterator[tuple[str, str]]:
            for chunk_id, text, paper_hash in rows:
                chunk_ids.append(chunk_id)
                hashes.add(paper_hash)
                yield chunk_id, text

        return self._build(pairs(), lambda: fingerprint(chunk_ids, hashes))

    def _build(self, rows: Iterable[tuple[str, str]], state_fingerprint: Callable[[], str]) -> str:
        """Index (chunk id, text) rows and swap the folder in whole: readers see old or new.

        Rows are tokenized a page at a time into compact id arrays, then ordered by chunk id
        with a sorted vocabulary, so the same content gives byte-identical files whatever the
        order the store returned it in. On any error the previous index is left as it was.
        """
        parent, name = self.folder.parent, self.folder.name
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{name}.v{time.time_ns():x}-{os.getpid()}"
        link = parent / f".{name}.link-{os.getpid()}"
        try:
            staging.mkdir()
            chunk_ids = self._write_index(rows, staging)
            recorded = state_fingerprint()
            (staging / IDS_FILE).write_text(json.dumps(chunk_ids), encoding="utf-8")
            (staging / STATE_FILE).write_text(
                json.dumps({"fingerprint": recorded, "chunks": len(chunk_ids)}),
                encoding="utf-8",
            )
            _fsync_tree(staging)
            previous = self._version()
            link.unlink(missing_ok=True)
            os.symlink(staging.name, link)
            if self.folder.is_dir() and not self.folder.is_symlink():
                # A plain folder from an earlier layout: moved aside once, not atomically.
                legacy = parent / f".{name}.legacy"
                shutil.rmtree(legacy, ignore_errors=True)
                os.replace(self.folder, legacy)
            os.replace(link, self.folder)  # the switch
        except BaseException:
            link.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(parent)
        for stale in self._stored_versions():
            if stale.name not in {staging.name, previous}:
                shutil.rmtree(stale, ignore_errors=True)
        for leftover in parent.glob(f".{name}.link-*"):  # from a build killed mid-switch
            leftover.unlink(missing_ok=True)
        return recorded

    def _version(self) -> str | None:
        """The version folder the link points at (None: no index, or a plain folder)."""
        try:
            return os.readlink(self.folder)
        except OSError:
            return None

    def _stored_versions(self) -> list[Path]:
        prefix = f".{self.folder.name}."
        if not self.folder.parent.is_dir():
            return []
        return [
            path
            for path in self.folder.parent.iterdir()
            if path.name.startswith(prefix) and not path.is_symlink()
        ]

    def remove(self) -> None:
        """Delete the index and all its versions."""
        if self.folder.is_symlink():
            self.folder.unlink()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
        for path in self._stored_versions():
            shutil.rmtree(path, ignore_errors=True)
        self._cache = None

    def _write_index(self, rows: Iterable[tuple[str, str]], folder: Path) -> list[str]:
        import bm25s
        import numpy as np

        vocabulary: dict[str, int] = {}
        documents: list[tuple[str, array[int]]] = []
        page: list[tuple[str, str]] = []

        def tokenize_page() -> None:
            tokens = self._tokenize([text for _, text in page])
            for (chunk_id, _), words in zip(page, tokens, strict=True):
                ids = array("i", [vocabulary.setdefault(word, len(vocabulary)) for word in words])
                documents.append((chunk_id, ids))
            page.clear()

        for row in rows:
            page.append(row)
            if len(page) >= TOKENIZE_PAGE:
                tokenize_page()
        if page:
            tokenize_page()
        documents.sort(key=lambda document: document[0])
        if documents:
            words = sorted(vocabulary)
            remap = np.empty(len(words), dtype=np.int32)
            for new_id, word in enumerate(words):
                remap[vocabulary[word]] = new_id
            corpus: list[array[int]] = []
            for _, ids in documents:
                canonical = array("i")
                canonical.frombytes(remap[np.frombuffer(ids, dtype=np.int32)].tobytes())
                corpus.append(canonical)
            retriever = bm25s.BM25()
            retriever.index(
                (corpus, {word: i for i, word in enumerate(words)}), show_progress=False
            )
            retriever.save(str(folder), show_progress=False)
        return [chunk_id for chunk_id, _ in documents]

    def files_digest(self) -> str | None:
        """sha256 over the index files' names and bytes (None when there is no index)."""
        if not self.folder.is_dir():
            return None
        digest = hashlib.sha256()
        for path in sorted(self.folder.iterdir()):
            digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    def state(self) -> dict[str, Any] | None:
        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def reload(self) -> None:
        """Forget the loaded index: the next search reads the folder again."""
        self._cache = None

    def _loaded(self) -> tuple[Any, list[str]]:
        """The index, loaded once per version from the folder the link pointed at."""
        import bm25s

        version = self._version()
        cache = self._cache  # one read: `reload` may clear it from another thread
        if cache is not None and cache[0] == version and version is not None:
            return cache[1], cache[2]
        folder = self.folder.parent / version if version else self.folder
        ids_path = folder / IDS_FILE
        if not ids_path.is_file():
            return None, []
        chunk_ids: list[str] = json.loads(ids_path.read_text(encoding="utf-8"))
        retriever = bm25s.BM25.load(str(folder), show_progress=False) if chunk_ids else None
        self._cache = (version, retriever, chunk_ids)
        return retriever, chunk_ids

    def search(self, query: str, k: int) -> list[KeywordHit]:
        retriever, chunk_ids = self._loaded()
        if retriever is None:
            return []
        tokens = self._tokenize([query])
        if not tokens or not tokens[0]:
            return []
        vocabulary = retriever.vocab_dict
        known = [[token for token in tokens[0] if token in vocabulary]]
        if not known[0]:
            return []
        documents, scores = retriever.retrieve(
            known, k=min(k, len(chunk_ids)), show_progress=False, n_threads=1
        )
        return [
            KeywordHit(chunk_ids[int(document)], float(score))
            for document, score in zip(documents[0], scores[0], strict=True)
            if score > 0
        ]


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
