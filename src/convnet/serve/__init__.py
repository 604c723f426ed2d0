"""`convnet serve`: the web pages and the HTTP API over a trained model (needs the serve extra).

    models = load_models(["runs/cats/model.safetensors"], ServeConfig())
    app = create_app(models, ServeConfig())      # a FastAPI app; app.py documents every endpoint

    config.py    ServeConfig: upload limits, batching, threads
    models.py    loading each model once, its name and card, its /predict batchers
    batching.py  the micro-batcher: concurrent /predict requests share one forward pass
    uploads.py   the request-body cap and decoding an upload from memory
    errors.py    every error as JSON {"detail": "<one sentence>"}
    app.py       the routes
    static/      the pages (plain HTML, CSS and JS; no build step, no CDN)
"""
