"""`convnet serve MODEL...`: the web page and the HTTP API on one machine (see convnet.serve.app)."""
from __future__ import annotations

import argparse
import os
import socket
import sys

from convnet.errors import ConfigError

HELP = "Serve trained models over HTTP: a web page that shows what the network sees, and a JSON API."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="model.safetensors (or its run folder), or a .onnx file; each is loaded once")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 127.0.0.1 answers this machine only (and only requests naming it), "
                   "0.0.0.0 every network")
    p.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one (the URL printed says which)")
    p.add_argument("--max-upload-mb", type=float, default=10.0,
                   help="largest request body, all files together, in MB (larger: 413)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="largest image, width x height, read from its header before decoding (larger: 413)")
    p.add_argument("--max-request-pixels", type=int, default=100_000_000,
                   help="most pixels of one request, its images together, read from their headers first (more: 413)")
    p.add_argument("--max-files", type=int, default=64, help="most images in one /predict request (more: 413)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="under load, how long a /predict batch waits for more requests before it runs")
    p.add_argument("--max-batch", type=int, default=64, help="most images in one forward pass")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per forward pass; 0: half the cores "
                   "(the rest parse requests and decode uploads)")


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is one sentence and port 0 can be reported."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}.")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family)
    except OSError as e:
        # os.strerror: create_server's own message repeats the address;
        # a failed name lookup (negative errno) says its own.
        reason = os.strerror(e.errno) if e.errno and e.errno > 0 else e.strerror or str(e)
        raise ConfigError(f"Cannot listen on {host}:{port} ({reason}); pass another --host or --port.") from None
    # Small answers go out at once: without TCP_NODELAY, a kept-alive connection's second write waits
    # for the client's delayed ACK (~40 ms a request). asyncio sets it only on sockets made with
    # protocol 6, and create_server's are protocol 0; accepted connections inherit it from here.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run(args: argparse.Namespace) -> int:
    # The serve extra is optional: fastapi and uvicorn are imported only when a server starts, so
    # every other command works without them and this one says which extra to install.
    try:
        import fastapi  # noqa: F401
        import fastapi_offline  # noqa: F401  (/docs's Swagger UI files)
        import uvicorn
    except ModuleNotFoundError:
        raise ConfigError("convnet serve needs the serve extra: pip install 'convnet[serve]'.") from None
    import torch

    from convnet.serve.app import create_app
    from convnet.serve.config import ServeConfig
    from convnet.serve.models import load_models

    config = ServeConfig(max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                         max_request_pixels=args.max_request_pixels, max_files=args.max_files,
                         batch_wait_ms=args.batch_wait_ms, max_batch=args.max_batch, threads=args.threads,
                         host=args.host)
    torch.set_num_threads(config.torch_threads)
    models = load_models(args.models, config)  # a bad file stops here, before a port is taken
    sock = _listen(args.host, args.port)
    if not config.loopback:
        print(f"warning: --host {args.host} opens the page and the API to every machine on the network "
              "that can reach this one; anyone there can upload images and read the model card "
              "(127.0.0.1, the default, answers this machine only)",
              file=sys.stderr, flush=True)
    print(f"convnet serve: {_url(sock)} ({', '.join(m.name for m in models)}); Ctrl-C stops it", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(models, config), log_level="warning",
                                           timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    print("stopped", file=sys.stderr)
    return 0
