"""The OpenAI wire format: `requests` (request bodies), `responses` (responses and chunks),
`embeddings` (`/v1/embeddings` requests and responses)."""
