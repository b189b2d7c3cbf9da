"""The OpenAI wire format: `requests` (request bodies), built from `messages`, `structured`
(`response_format` and `tools`) and `wire` (the base model); `responses` (responses and chunks);
`embeddings` (`/v1/embeddings` requests and responses)."""
