"""The bridges: clients of one API reach deployments that speak another.

    openai               /v1/... for any deployment, named in the body (`baseten`) or by path
    legacy               a predict-only model answering in the OpenAI shapes
    anthropic            /v1/messages, translated onto the OpenAI chat path and back
    anthropic_translate  that translation: pure functions, no I/O
"""
