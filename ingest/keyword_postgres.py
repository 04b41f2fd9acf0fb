"""The keyword index in PostgreSQL full-text search, shared by every app replica.

One row per chunk: its text, Postgres's English-stemmed lexemes (`tsvector`, GIN-indexed) and
their count. Every write is one transaction, so a reader or a killed ingest sees a batch whole
or not at all. Ranking is BM25 (bm25s's defaults: Lucene's idf, k1 1.5, b 0.75) computed in SQL
from the lexemes' positions. Document frequencies, the chunk count and the total length live in
two small tables that statement triggers on the chunks table keep up to date inside the writing
transaction, so they always agree with the rows. A query scores only the chunks holding one of
its rarer lexemes (taken rarest first until their chunk count reaches a budget), each against
all of the query's lexemes (docs/scaling.md §8).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from math import log
from typing import TYPE_CHECKING, Any

from ingest.keyword import KeywordHit, fingerprint, paper_of
from ingest.store import StoreUnavailableError

if TYPE_CHECKING:
    import psycopg

# bm25s's defaults (BM25(method="lucene", k1=1.5, b=0.75)).
K1 = 1.5
B = 0.75
TEXT_SEARCH_CONFIG = "english"
# Chunks scored per query at most (beyond the rarest lexeme's own): see `_choose`; the
# default of `index.keyword_candidates`.
CANDIDATE_BUDGET = 20_000

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

# Document frequencies and totals, kept by statement triggers in the writing transaction. The
# totals row is updated first, so concurrent writers queue on it before touching any term row
# (no deadlock). Created, and filled from the rows already there, when a store first lacks them.
COUNTS = """
CREATE TABLE {terms} (term text PRIMARY KEY, df integer NOT NULL);
CREATE TABLE {totals} (one boolean PRIMARY KEY CHECK (one), n bigint NOT NULL,
    total_length bigint NOT NULL);
CREATE OR REPLACE FUNCTION {count_function}() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE {totals} AS t SET n = t.n - s.rows,
            total_length = t.total_length - s.length
        FROM (SELECT count(*) AS rows, coalesce(sum(length), 0) AS length FROM old_rows) AS s;
        UPDATE {terms} AS t SET df = t.df - d.df
        FROM (SELECT lexeme, count(*) AS df FROM old_rows, unnest(old_rows.lexemes)
              GROUP BY lexeme) AS d
        WHERE t.term = d.lexeme;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE {totals} AS t SET n = t.n + s.rows,
            total_length = t.total_length + s.length
        FROM (SELECT count(*) AS rows, coalesce(sum(length), 0) AS length FROM new_rows) AS s;
        INSERT INTO {terms} (term, df)
        SELECT lexeme, count(*) FROM new_rows, unnest(new_rows.lexemes)
        GROUP BY lexeme ORDER BY lexeme
        ON CONFLICT (term) DO UPDATE SET df = {terms}.df + EXCLUDED.df;
    END IF;
    RETURN NULL;
END
$body$;
CREATE TRIGGER {insert_trigger} AFTER INSERT ON {chunks} REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {count_function}();
CREATE TRIGGER {delete_trigger} AFTER DELETE ON {chunks} REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {count_function}();
CREATE TRIGGER {update_trigger} AFTER UPDATE ON {chunks}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {count_function}();
INSERT INTO {terms} (term, df)
SELECT lexeme, count(*) FROM {chunks}, unnest(lexemes) GROUP BY lexeme;
INSERT INTO {totals} (one, n, total_length)
SELECT true, count(*), coalesce(sum(length), 0) FROM {chunks};
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

# The query's distinct lexemes that some chunk holds, their df, and the corpus totals.
TERMS = """
SELECT t.term, t.df, totals.n, totals.total_length
FROM unnest(tsvector_to_array(to_tsvector({config}, %(query)s))) AS q (term)
JOIN {terms} AS t ON t.term = q.term AND t.df > 0
CROSS JOIN {totals} AS totals
"""

# BM25 of the chunks holding any of the chosen lexemes (%(query)s), against all the query's
# lexemes (%(terms)s with their %(idfs)s): only those lexemes' positions are unnested.
SEARCH_BM25 = """
WITH terms AS MATERIALIZED (
    SELECT term, idf FROM unnest(%(terms)s::text[], %(idfs)s::float8[]) AS t (term, idf)
)
SELECT c.chunk_id,
       sum(terms.idf * own.tf / (own.tf + {k1} * (1 - {b} + {b} * c.length / %(avgdl)s))) AS score
FROM {chunks} AS c
CROSS JOIN LATERAL (
    SELECT lexeme, coalesce(array_length(positions, 1), 1)::float8 AS tf
    FROM unnest(ts_filter(setweight(c.lexemes, 'A', %(terms)s::text[]), '{{a}}'))
) AS own
JOIN terms ON terms.term = own.lexeme
WHERE c.lexemes @@ %(query)s::tsquery
GROUP BY c.chunk_id
ORDER BY score DESC, c.chunk_id
LIMIT %(k)s
"""


class PostgresKeywordStore:
    """The keyword store of one collection in a PostgreSQL database (`url`: a libpq DSN)."""

    def __init__(self, url: str, collection: str, candidate_budget: int = CANDIDATE_BUDGET) -> None:
        self.url = url
        self.collection = collection
        self.candidate_budget = candidate_budget
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
            "terms": sql.Identifier(base + "_terms"),
            "totals": sql.Identifier(base + "_totals"),
            "count_function": sql.Identifier(base + "_count"),
            "insert_trigger": sql.Identifier(base + "_counted_insert"),
            "delete_trigger": sql.Identifier(base + "_counted_delete"),
            "update_trigger": sql.Identifier(base + "_counted_update"),
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
                        self._count_terms(cursor)
                    self._schema_ready = True
                with connection.transaction(), connection.cursor() as cursor:
                    yield cursor
            except psycopg.OperationalError as error:
                connection.close()  # the server went away: the next call connects again
                raise StoreUnavailableError(
                    f"The keyword store ({self.where}) stopped answering: {error}"
                ) from error

    def _count_terms(self, cursor: psycopg.Cursor[Any]) -> None:
        """Create the df and totals tables and their triggers, filled from the rows already
        stored, when missing (a table written by an earlier version): once, in the schema
        transaction, so no write can slip between the fill and the triggers."""
        cursor.execute("SELECT to_regclass(%s)", (self._names()["terms"].as_string(),))
        found = cursor.fetchone()
        if found is None or found[0] is None:
            cursor.execute(self._sql(COUNTS))

    @contextmanager
    def sole_writer(self) -> Iterator[bool]:
        """Whether this process is the collection's only writer: a session advisory lock on a
        connection of its own, held until the block ends or the process dies."""
        import psycopg

        try:
            connection = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as error:
            raise StoreUnavailableError(
                f"The keyword store ({self.where}) cannot be reached: {error}"
            ) from error
        with connection:
            key = f"scholia_ingest_{self.collection}"
            row = connection.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
            yield bool(row and row[0])

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

    def confirm(self, expected: Callable[[], str]) -> bool:
        """Record `expected()` (Chroma's fingerprint) as the state when the table's own chunk
        ids and paper hashes give the same one: one pass over two columns, no texts read from
        Chroma. Writers wait meanwhile (SHARE lock), so the state recorded is the rows'."""
        with self._transaction() as cursor:
            cursor.execute(self._sql("LOCK TABLE {chunks} IN SHARE MODE"))
            chunk_ids: list[str] = []
            hashes: set[str] = set()
            query = self._sql("COPY (SELECT chunk_id, paper_hash FROM {chunks}) TO STDOUT")
            with cursor.copy(query) as copy:
                for chunk_id, paper_hash in copy.rows():
                    chunk_ids.append(chunk_id)
                    hashes.add(paper_hash)
            own = fingerprint(chunk_ids, hashes)
            if own != expected():
                return False
            self._record(cursor, own, len(chunk_ids))
        return True

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
            cursor.execute(self._sql(TERMS), {"query": query})
            found = cursor.fetchall()
            if not found:
                return []
            n, total_length = float(found[0][2]), float(found[0][3])
            terms = sorted((int(df), term) for term, df, _, _ in found)
            idfs = [log(1 + (n - df + 0.5) / (df + 0.5)) for df, _ in terms]
            chosen = _choose([df for df, _ in terms], self.candidate_budget)
            cursor.execute(
                self._sql(SEARCH_BM25),
                {
                    "terms": [term for _, term in terms],
                    "idfs": idfs,
                    "avgdl": total_length / max(n, 1.0),
                    "query": " | ".join(_quoted(term) for _, term in terms[:chosen]),
                    "k": k,
                },
            )
            return [KeywordHit(chunk_id, float(score)) for chunk_id, score in cursor.fetchall()]


def _choose(dfs: Sequence[int], budget: int) -> int:
    """How many of the lexemes (by df, rarest first) select the chunks to score: the rarest
    always, then more while their chunks stay within `budget`. A chunk holding only the others
    scores below the sum of their idfs (each term adds idf · tf/(tf + …) < idf); common lexemes
    have small idfs, so such a chunk rarely reaches the top k (docs/scaling.md §8)."""
    chosen, reach = 1, dfs[0] if dfs else 0
    while chosen < len(dfs) and reach + dfs[chosen] <= budget:
        reach += dfs[chosen]
        chosen += 1
    return chosen


def _incoming() -> dict[str, Any]:
    from psycopg import sql

    return {"incoming": sql.Identifier("scholia_incoming_chunks")}


def _quoted(lexeme: str) -> str:
    """`lexeme` as tsquery text (quoted: a lexeme may hold any character)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
