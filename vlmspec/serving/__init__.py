"""`vlmspec serve`: an OpenAI-compatible HTTP server with continuous speculative batching.

`engine` runs the batch on one background thread; `app` is the HTTP layer (FastAPI);
`protocol` checks and converts OpenAI chat-completion requests; `static/` holds the page at `/`.
Nothing is imported here, so `vlmspec --help` stays light; import from the submodules.
"""
