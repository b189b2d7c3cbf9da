"""Prompt endpoints and datasets over HTTP: the routes, their error shape and their keys; what
they do (templates, search, costs) is `trestle.endpoints`.

    datasets       /api/datasets/...
    prompt_admin   /api/v1/endpoints, prices and usage (the management API)
    prompt_call    /api/endpoints/{id}/completions
"""
