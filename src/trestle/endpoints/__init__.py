"""Prompt endpoints and the datastores they search.

Read top-down:
    prompt          a call of a prompt endpoint → the OpenAI request its model gets
    templates       an endpoint's templates: checked when it is created, rendered per call
    costs           what a call costs: tokens × the model's price per 1M tokens
    access_log      the `last_accessed` time of searched rows, written in batches
    retrieval/      datastores: datasets of documents, ingest, hybrid search
"""
