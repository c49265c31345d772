"""Seeing inside a model server: metrics, traces, the API document and the playground.

    openapi.py     the OpenAPI document of the routes this model serves
    assets.py      package files (the playground, the docs page) served from memory
    pages.py       the ASGI routes: /openapi.json, /docs, /playground
    metrics.py     conventional metric families (vLLM / TGI names and buckets)
    multiworker.py one scrape covering every worker of ``--workers N``
    tracing.py     OpenTelemetry spans (extra ``kingpost[otel]``), off unless configured

Nothing here is on the request path unless it is switched on.
"""
