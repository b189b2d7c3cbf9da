"""Datastores: datasets of documents, and hybrid search over them.

Read top-down:
    datastore       `Datastore`: create datasets, upload files, search, rows, delete documents
    ingest          parse → chunk → embed → store, atomically; upload limits
    parsing         text, Markdown, PDF (pypdf), CSV (one row per row) to text pieces
    chunking        pieces to chunks of a configurable size and overlap, whole words only
    embedder        the client of the embeddings worker (`/v1/embeddings`)
    search          the search interface, the fusion formula, option checks
    search_sqlite   FTS5 BM25 + an in-memory exact vector index (the default store)
    search_postgres pgvector HNSW + PostgreSQL full text
    keyword_index, vector_index   the SQLite store's two indexes
"""
