"""`convnet serve`: the web pages and the HTTP API over a trained model (needs the serve extra).

    models = load_models(["runs/cats/model.safetensors"], ServeConfig())
    app = create_app(models, ServeConfig())      # a FastAPI app; app.py documents every endpoint

    app.py              create_app: the routers, the error handlers and the middleware together
    routes_pages.py     /, /explain, /static/..., /docs
    routes_models.py    /healthz, /api/models, /api/model (the model card), its curves
    routes_predict.py   /predict, /cam, /features: uploads, every setting a form field
    routes_explain.py   /api/explain: the worked example, its settings query parameters
    dependencies.py     what a route asks for by type: the app's state, the model a request names
    inputs.py           uploaded files to model inputs, decoded in worker threads
    uploads.py          the request-body cap, the in-memory form, checking and decoding an upload
    hosts.py            a loopback server answers requests naming this machine only
    config.py           ServeConfig: upload limits, batching, threads
    models.py           loading each model once, its name and card, its /predict batchers
    batching.py         the micro-batcher: concurrent /predict requests share one forward pass
    errors.py           every error as JSON {"detail": "<one sentence>"}
    static/             the pages (plain HTML, CSS and JS; no build step, no CDN)
"""
