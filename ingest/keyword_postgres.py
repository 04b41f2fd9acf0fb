"""The keyword index in PostgreSQL full-text search, shared by every app replica.

One row per chunk: its text, Postgres's English-stemmed lexemes (`tsvector`, GIN-indexed) and
their count. Every write is one transaction, so a reader or a killed ingest sees a batch whole
or not at all. Ranking is BM25 (bm25s's defaults: Lucene's idf, k1 1.5, b 0.75) computed in SQL
from the lexemes' positions; document frequencies are counted through the GIN index per query.
Postgres's own `ts_rank_cd` ranked worse on the dev suite (docs/scaling.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ingest.keyword import KeywordHit, fingerprint, paper_of
from ingest.store import StoreUnavailableError

if TYPE_CHECKING:
    import psycopg

# bm25s's defaults (BM25(method="lucene", k1=1.5, b=0.75)).
K1 = 1.5
B = 0.75
TEXT_SEARCH_CONFIG = "english"

SCHEMA = """
CREATE TABLE IF NOT EXISTS {chunks} (
    chunk_id text PRIMARY KEY,
    paper_id text NOT NULL,
    paper_hash text NOT NULL,
    body text NOT NULL,
    lexemes tsvector NOT NULL,
    length integer NOT NULL
);
CREATE INDEX IF NOT EXISTS {lexemes_index} ON {chunks} USING gin (lexemes);
CREATE INDEX IF NOT EXISTS {paper_index} ON {chunks} (paper_id);
CREATE TABLE IF NOT EXISTS {state} (key text PRIMARY KEY, value text NOT NULL);
"""

# Rows to insert, as (chunk id, paper id, paper hash, text): lexemes and length computed here.
INSERT = """
INSERT INTO {chunks} (chunk_id, paper_id, paper_hash, body, lexemes, length)
SELECT chunk_id, paper_id, paper_hash, body, lexemes,
       (SELECT coalesce(sum(coalesce(array_length(positions, 1), 1)), 0) FROM unnest(lexemes))
FROM (SELECT chunk_id, paper_id, paper_hash, body, to_tsvector({config}, body) AS lexemes
      FROM {incoming}) AS parsed
ON CONFLICT (chunk_id) DO UPDATE SET paper_id = EXCLUDED.paper_id,
    paper_hash = EXCLUDED.paper_hash, body = EXCLUDED.body, lexemes = EXCLUDED.lexemes,
    length = EXCLUDED.length
"""

# BM25 of the chunks holding any of the query's lexemes (%(lexemes)s: distinct, stemmed).
SEARCH_BM25 = """
WITH corpus AS MATERIALIZED (SELECT count(*)::float8 AS n, avg(length)::float8 AS avgdl FROM {chunks}),
terms AS MATERIALIZED (
    SELECT term, ln(1 + (corpus.n - df + 0.5) / (df + 0.5)) AS idf
    FROM corpus, LATERAL (
        SELECT term, (SELECT count(*) FROM {chunks} WHERE lexemes @@ quoted::tsquery)::float8 AS df
        FROM unnest(%(lexemes)s::text[], %(quoted)s::text[]) AS pair (term, quoted)
    ) AS counted
)
SELECT c.chunk_id,
       sum(terms.idf * tf / (tf + {k1} * (1 - {b} + {b} * c.length / corpus.avgdl))) AS score
FROM {chunks} AS c
CROSS JOIN corpus
CROSS JOIN LATERAL (
    SELECT lexeme, coalesce(array_length(positions, 1), 1)::float8 AS tf FROM unnest(c.lexemes)
) AS own
JOIN terms ON terms.term = own.lexeme
WHERE c.lexemes @@ %(query)s::tsquery
GROUP BY c.chunk_id
ORDER BY score DESC, c.chunk_id
LIMIT %(k)s
"""


class PostgresKeywordStore:
    """The keyword store of one collection in a PostgreSQL database (`url`: a libpq DSN)."""

    def __init__(self, url: str, collection: str) -> None:
        self.url = url
        self.collection = collection
        self._connection: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._schema_ready = False

    @property
    def where(self) -> str:
        return f"PostgreSQL table {self._names()['chunks'].as_string()} at {self._safe_url()}"

    def _safe_url(self) -> str:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(self.url)
        return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname')}"

    def _names(self) -> dict[str, Any]:
        from psycopg import sql

        base = "scholia_" + "".join(c if c.isalnum() else "_" for c in self.collection.lower())
        return {
            "chunks": sql.Identifier(base + "_chunks"),
            "state": sql.Identifier(base + "_state"),
            "lexemes_index": sql.Identifier(base + "_lexemes"),
            "paper_index": sql.Identifier(base + "_paper"),
            "config": sql.Literal(TEXT_SEARCH_CONFIG),
            "k1": sql.Literal(K1),
            "b": sql.Literal(B),
        }

    def _sql(self, template: str, **extra: Any) -> Any:
        from psycopg import sql

        return sql.SQL(template).format(**self._names(), **extra)

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction on the shared connection (reconnecting after a broken one)."""
        import psycopg

        with self._lock:
            if self._connection is None or self._connection.closed:
                try:
                    self._connection = psycopg.connect(
                        self.url, autocommit=True, connect_timeout=10
                    )
                except psycopg.OperationalError as error:
                    raise StoreUnavailableError(
                        f"The keyword store ({self.where}) cannot be reached: {error}"
                    ) from error
                self._schema_ready = False
            connection = self._connection
            try:
                if not self._schema_ready:
                    with connection.transaction(), connection.cursor() as cursor:
                        # Replicas starting together would race on CREATE … IF NOT EXISTS.
                        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('scholia_schema'))")
                        cursor.execute(self._sql(SCHEMA))
                    self._schema_ready = True
                with connection.transaction(), connection.cursor() as cursor:
                    yield cursor
            except psycopg.OperationalError as error:
                connection.close()  # the server went away: the next call connects again
                raise StoreUnavailableError(
                    f"The keyword store ({self.where}) stopped answering: {error}"
                ) from error

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def state(self) -> dict[str, Any] | None:
        with self._transaction() as cursor:
            cursor.execute(self._sql("SELECT key, value FROM {state}"))
            values = dict(cursor.fetchall())
        if "fingerprint" not in values:
            return None
        return {"fingerprint": values["fingerprint"], "chunks": int(values["chunks"])}

    def build_from(self, rows: Iterable[tuple[str, str, str]]) -> str:
        """Make the table hold exactly these (chunk id, text, paper hash) rows, in one
        transaction: rows already stored with the same hash and text are not written again."""
        chunk_ids: list[str] = []
        hashes: set[str] = set()
        with self._transaction() as cursor:
            self._stage(cursor)
            with cursor.copy(self._sql("COPY {incoming} FROM STDIN", **_incoming())) as copy:
                for chunk_id, text, paper_hash in rows:
                    chunk_ids.append(chunk_id)
                    hashes.add(paper_hash)
                    copy.write_row((chunk_id, paper_of(chunk_id), paper_hash, text))
            cursor.execute(
                self._sql(
                    "DELETE FROM {chunks} AS c WHERE NOT EXISTS (SELECT 1 FROM {incoming} AS i "
                    "WHERE i.chunk_id = c.chunk_id AND i.paper_hash = c.paper_hash "
                    "AND i.body = c.body)",
                    **_incoming(),
                )
            )
            cursor.execute(
                self._sql(
                    "DELETE FROM {incoming} AS i USING {chunks} AS c WHERE i.chunk_id = c.chunk_id",
                    **_incoming(),
                )
            )
            cursor.execute(self._sql(INSERT, **_incoming()))
            recorded = fingerprint(chunk_ids, hashes)
            self._record(cursor, recorded, len(chunk_ids))
        return recorded

    def write_papers(self, papers: Sequence[tuple[str, str, Sequence[tuple[str, str]]]]) -> None:
        """Replace these papers' rows, as (paper id, paper hash, [(chunk id, text)]), in one
        transaction; the recorded fingerprint is cleared (the next refresh checks it all)."""
        with self._transaction() as cursor:
            self._stage(cursor)
            with cursor.copy(self._sql("COPY {incoming} FROM STDIN", **_incoming())) as copy:
                for paper_id, paper_hash, chunks in papers:
                    for chunk_id, text in chunks:
                        copy.write_row((chunk_id, paper_id, paper_hash, text))
            cursor.execute(
                self._sql("DELETE FROM {chunks} WHERE paper_id = ANY(%s)"),
                ([paper_id for paper_id, _, _ in papers],),
            )
            cursor.execute(self._sql(INSERT, **_incoming()))
            cursor.execute(self._sql("DELETE FROM {state}"))

    def delete_papers(self, paper_ids: Sequence[str]) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                self._sql("DELETE FROM {chunks} WHERE paper_id = ANY(%s)"), (list(paper_ids),)
            )
            cursor.execute(self._sql("DELETE FROM {state}"))

    def remove(self) -> None:
        with self._transaction() as cursor:
            cursor.execute(self._sql("DELETE FROM {chunks}"))
            cursor.execute(self._sql("DELETE FROM {state}"))

    def reload(self) -> None:
        """Nothing to do: every search reads the database."""

    def _stage(self, cursor: psycopg.Cursor[Any]) -> None:
        cursor.execute(
            self._sql(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {incoming} (chunk_id text, paper_id text, "
                "paper_hash text, body text) ON COMMIT DELETE ROWS",
                **_incoming(),
            )
        )

    def _record(self, cursor: psycopg.Cursor[Any], recorded: str, chunks: int) -> None:
        cursor.execute(self._sql("DELETE FROM {state}"))
        cursor.execute(
            self._sql(
                "INSERT INTO {state} (key, value) VALUES ('fingerprint', %s), ('chunks', %s)"
            ),
            (recorded, str(chunks)),
        )

    def search(self, query: str, k: int) -> list[KeywordHit]:
        with self._transaction() as cursor:
            cursor.execute(
                "SELECT array_agg(DISTINCT lexeme ORDER BY lexeme) "
                "FROM unnest(to_tsvector(%s::regconfig, %s))",
                (TEXT_SEARCH_CONFIG, query),
            )
            found = cursor.fetchone()
            lexemes: list[str] = (found[0] if found else None) or []
            if not lexemes:
                return []
            cursor.execute(
                self._sql(SEARCH_BM25),
                {
                    "lexemes": lexemes,
                    "quoted": [_quoted(lexeme) for lexeme in lexemes],
                    "query": " | ".join(_quoted(lexeme) for lexeme in lexemes),
                    "k": k,
                },
            )
            return [KeywordHit(chunk_id, float(score)) for chunk_id, score in cursor.fetchall()]


def _incoming() -> dict[str, Any]:
    from psycopg import sql

    return {"incoming": sql.Identifier("scholia_incoming_chunks")}


def _quoted(lexeme: str) -> str:
    """`lexeme` as tsquery text (quoted: a lexeme may hold any character)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
