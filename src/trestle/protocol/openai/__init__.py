"""The OpenAI wire format: `requests` (request bodies) and `responses` (responses and chunks)."""
