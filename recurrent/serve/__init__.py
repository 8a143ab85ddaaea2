"""`recurrent serve`: trained runs over HTTP (FastAPI on uvicorn), with a browser playground.

    app.py      the endpoints (/generate, /predict, /translate, /forecast, /transcribe, /models, /health, /), errors,
                the body limits
    engine.py   continuous batching: concurrent generations stepped together, token by token
    models.py   the run folders served, by name, and each task's endpoint
    schemas.py  the pydantic requests and responses (the OpenAPI page at /docs)
    limits.py   the server's limits on one request (a flag each)
    static/     the playground: one HTML page, no build step, no CDN

Needs the `serve` extra: pip install 'recurrent[serve]'.
"""
