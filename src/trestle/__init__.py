"""trestle: self-hosted model serving.

The request path reads top-down through the sub-packages:
gateway -> deploy (replica backends) -> runtime (user Model) | engine (llama.cpp).
"""

__version__ = "0.1.0"
