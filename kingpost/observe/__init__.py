"""Seeing inside a model server: metrics, traces, and the pages that show a model.

    metrics.py      conventional metric families (vLLM / TGI names and buckets)
    multiworker.py  one scrape covering every worker of ``--workers N``
    generations.py  what one engine generation reports: metrics and a GenAI span
    tracing.py      OpenTelemetry spans (extra ``kingpost[otel]``), off unless configured
    pages.py        ASGI routes serving /openapi.json, /docs and /playground from memory
    assets/         the playground and docs pages: HTML, CSS, ES modules

It imports nothing else of Kingpost, so every layer may use it; the server
builds the API document (``kingpost.server.openapi``) and wires these in.
"""
