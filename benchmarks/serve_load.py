"""`convnet serve` under load: requests/s and latency of POST /predict, micro-batching against one forward per request.

    python benchmarks/serve_load.py [--requests 2000] [--rounds 2]

The models are made here, no downloads: the tutorial network (`--recipe tutorial`) and airnet
(`--recipe fast`), each trained for 1 epoch on the embedded sample (`--data sample`) and exported
with `convnet export --format onnx`. Their accuracy is poor and does not matter: the time of a
forward pass depends on the architecture and the input size, not on the weights' values.

For each model and runtime (the model.safetensors run by PyTorch, the .onnx file by onnxruntime)
two servers run side by side, each `convnet serve` in a process of its own:
    batched   the server as shipped (micro-batching: --max-batch 64, --batch-wait-ms 2)
    naive     --max-batch 1 --batch-wait-ms 0: every request is one forward pass of one image
              (serve.batching takes one item per batch and never waits)
This process is the load generator: httpx clients on loopback, each thread with one kept-alive
connection, uploading the same real 32x32 PNG (a sample image) as the multipart field `file`.
Each server gets a warm-up, then `--requests` requests at concurrency 1 (one thread, one after
another) and as many at concurrency 16 (16 threads); the requests of each phase are split into
`--rounds` parts run alternately on the batched and the naive server, so drift of the machine
hits both alike. Latency is per request, from sending to the parsed answer; an error is any
answer other than a 200 with one prediction list, or an exception.

Nothing is pinned to a core: server and client share all cores, as they would on one machine.
Each run records the CPU seconds the server process and this process spent, so how busy the
cores were is measured, not guessed. Beside the HTTP figures, and for explaining them:
    forward_ms      the server's work per batch timed directly in this process (`rank` on a
                    uint8 batch, what serve.models' batcher runs), batch 1 and batch 16, with
                    torch's threads set as the server sets them
    decode_ms       the server's per-upload decoding (PNG bytes -> the model's uint8 input)
    http_floor_ms   GET /healthz (no model) on a kept-alive connection and on a fresh one
    listen_socket   TCP_NODELAY and the protocol number of the socket `convnet serve` listens on

Writes benchmarks/results/serve_load.json.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from _common import REPO, write_result
from PIL import Image

SAMPLE_IMAGE = REPO / "src" / "convnet" / "data" / "sample" / "cifar10" / "test" / "bird" / "0290.jpg"
MODELS = {"tutorial": "tutorial", "fast": "fast"}  # name -> recipe
VARIANTS = {
    "batched": [],  # as shipped
    "naive": ["--max-batch", "1", "--batch-wait-ms", "0"],
}
CONCURRENCY = (1, 16)
WARMUP = 100  # requests per server at each concurrency before measuring
FLOOR_REQUESTS = 50  # GET /healthz per connection kind
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = len(os.sched_getaffinity(0))
CONTROL_REQUESTS = 500  # /predict at concurrency 1 on the TCP_NODELAY control server
# `convnet serve` with TCP_NODELAY on its listening socket, for the control measurement only (see http_floor)
NODELAY_CONTROL = [sys.executable, "-c", "import socket, sys\n"
                   "make = socket.create_server\n"
                   "def nodelay(*a, **k):\n s = make(*a, **k)\n"
                   " s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n return s\n"
                   "socket.create_server = nodelay\n"
                   "from convnet.cli import main\n"
                   "sys.exit(main(sys.argv[1:]))"]
# the client sends each request at once, as browsers and curl do
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def convnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "convnet", *args]


def make_models(tmp: Path) -> dict[str, dict[str, Path]]:
    """model name -> {"pytorch": model.safetensors, "onnxruntime": model.onnx}, trained 1 epoch on the sample."""
    out = {}
    for name, recipe in MODELS.items():
        subprocess.run(convnet("train", "--data", "sample", "--recipe", recipe, "--epochs", "1", "--runs-dir", str(tmp),
                               "--name", name, "--quiet"), check=True)
        weights = tmp / name / "model.safetensors"
        subprocess.run(convnet("export", str(weights), "--format", "onnx"), check=True, stdout=subprocess.DEVNULL)
        out[name] = {"pytorch": weights, "onnxruntime": weights.with_suffix(".onnx")}
    return out


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.open(SAMPLE_IMAGE).save(buf, "PNG")
    return buf.getvalue()


def machine_busy_seconds() -> float:
    """CPU time all processes together have spent (every core, not idle, not waiting on I/O), from /proc/stat."""
    user, nice, system, idle, iowait, *rest = (int(x) for x in
                                               Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + sum(rest)) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of proc(5))


@contextmanager
def server(model: Path, flags: list[str], launcher: list[str] | None = None):
    """`convnet serve MODEL --port 0 FLAGS` in its own process (started by `launcher`, default
    `python -m convnet`); yields (url, pid)."""
    proc = subprocess.Popen([*(launcher or convnet()), "serve", str(model), "--port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "convnet serve: http://127.0.0.1:PORT/ (...)"
        found = re.search(r"http://\S+/", line)
        if not found:
            proc.kill()
            raise RuntimeError(f"convnet serve did not start: {line!r} {proc.stderr.read()[-2000:]}")
        yield found.group(0), proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(socket_options=NODELAY), timeout=60)


def one_request(c: httpx.Client, png: bytes) -> tuple[float, bool]:
    """(seconds, ok) of one POST /predict."""
    start = time.perf_counter()
    try:
        r = c.post("/predict", files={"file": ("image.png", png, "image/png")})
        ok = r.status_code == 200 and len(r.json()) == 1 and len(r.json()[0]["predictions"]) == 5
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        ok = False
    return time.perf_counter() - start, ok


def load(url: str, pid: int, png: bytes, n: int, concurrency: int) -> dict:
    """n requests from `concurrency` threads (one kept-alive connection each); raw latencies and counts."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    def worker(quota: int) -> None:
        nonlocal errors
        with client(url) as c:
            c.get("/healthz")  # connected before the clock starts
            barrier.wait()
            mine = [one_request(c, png) for _ in range(quota)]
        with lock:
            latencies.extend(s for s, _ in mine)
            errors += sum(not ok for _, ok in mine)

    threads = [threading.Thread(target=worker, args=(n // concurrency + (i < n % concurrency),))
               for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    cpu0, server0, busy0, start = time.process_time(), cpu_seconds(pid), machine_busy_seconds(), time.perf_counter()
    for t in threads:
        t.join()
    return {"latencies": latencies, "errors": errors, "seconds": time.perf_counter() - start,
            "client_cpu": time.process_time() - cpu0, "server_cpu": cpu_seconds(pid) - server0,
            "machine_busy": machine_busy_seconds() - busy0}


def summary(parts: list[dict]) -> dict:
    """Figures of one (server, concurrency) run from its rounds."""
    lat = sorted(x for p in parts for x in p["latencies"])
    n, seconds = len(lat), sum(p["seconds"] for p in parts)
    server_cpu, client_cpu = sum(p["server_cpu"] for p in parts), sum(p["client_cpu"] for p in parts)
    return {
        "requests": n,
        "errors": sum(p["errors"] for p in parts),
        "requests_per_s": n / seconds,
        "p50_ms": 1000 * lat[n // 2],
        "p99_ms": 1000 * lat[min(n - 1, int(0.99 * n))],
        "mean_ms": 1000 * statistics.fmean(lat),
        "seconds": seconds,
        "server_cpu_ms_per_request": 1000 * server_cpu / n,
        "client_cpu_ms_per_request": 1000 * client_cpu / n,
        "cores_busy": (server_cpu + client_cpu) / (seconds * CORES),  # both processes' CPU time over all cores' time
        # cores' worth of CPU that other processes on the machine took meanwhile (0 on a quiet machine)
        "other_processes_cores": max(0.0, sum(p["machine_busy"] for p in parts) - server_cpu - client_cpu) / seconds,
    }


def healthz_p50_ms(url: str) -> float:
    """p50 of GET /healthz (no model, no upload) on one kept-alive connection: the HTTP round trip alone."""
    times = []
    with client(url) as c:
        for _ in range(FLOOR_REQUESTS):
            start = time.perf_counter()
            c.get("/healthz").raise_for_status()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def http_floor(url: str, model: Path, png: bytes) -> dict:
    """The HTTP round trip of the shipped server, and of a control: the same server with TCP_NODELAY
    set on its listening socket (which accepted connections inherit), GET /healthz and /predict at concurrency 1."""
    out = {"healthz_p50_ms": healthz_p50_ms(url)}
    with server(model, [], launcher=NODELAY_CONTROL) as (control, pid):
        load(control, pid, png, WARMUP, 1)
        out["control_tcp_nodelay_healthz_p50_ms"] = healthz_p50_ms(control)
        figures = summary([load(control, pid, png, CONTROL_REQUESTS, 1)])
        out["control_tcp_nodelay_predict_c1"] = {k: figures[k] for k in ("requests", "errors", "p50_ms", "p99_ms")}
    return out


def listen_socket() -> dict:
    """The socket `convnet serve` listens on, made by its own function: accepted connections inherit
    its TCP_NODELAY, and asyncio sets TCP_NODELAY itself only on sockets whose protocol is IPPROTO_TCP."""
    from convnet.cli.serve import _listen

    with _listen("127.0.0.1", 0) as s:
        return {"tcp_nodelay": bool(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)), "proto": s.proto,
                "ipproto_tcp": socket.IPPROTO_TCP}


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def direct_timings(path: Path, png: bytes) -> dict:
    """The server's work for one request, without HTTP: decoding the upload, and a forward pass
    with the ranking at batch 1 and 16, as serve.models' batcher runs it, torch threads as `convnet serve` sets them."""
    import torch

    from convnet.inference.loading import load_classifier
    from convnet.inference.predict import rank
    from convnet.serve.config import ServeConfig
    from convnet.serve.uploads import decode_upload, open_upload

    torch.set_num_threads(ServeConfig().torch_threads)
    clf = load_classifier(path)

    def decode():  # as the server does: the header checked, then the pixels decoded
        return clf.to_input(decode_upload(open_upload(png, "image.png", 40_000_000), "image.png"))

    x = decode()
    out = {"decode_ms": median_ms(decode, 300)}
    for b in (1, 16):
        batch = torch.stack([x] * b)
        out[f"forward_batch{b}_ms"] = median_ms(lambda batch=batch: rank(clf, batch, k=len(clf.classes)),
                                                300 if b == 1 else 100)
    out["forward_batch16_ms_per_image"] = out["forward_batch16_ms"] / 16
    return out


def notes(runs: dict, sock: dict) -> list[str]:
    """Why a target is missed, in sentences built from the measured figures."""
    out = []
    for key, r in runs.items():
        c1, floor, d = r["batched"]["c1"], r["http_floor"], r["direct"]
        if key.startswith("tutorial/") and c1["p50_ms"] >= 5:
            control = floor["control_tcp_nodelay_predict_c1"]["p50_ms"]
            text = (f"{key}: p50 at concurrency 1 is {c1['p50_ms']:.1f} ms, of which the server's decoding and "
                    f"forward pass are {d['decode_ms'] + d['forward_batch1_ms']:.2f} ms; GET /healthz, which runs no "
                    f"model, takes {floor['healthz_p50_ms']:.1f} ms. The same server with TCP_NODELAY on its listening "
                    f"socket answers GET /healthz in {floor['control_tcp_nodelay_healthz_p50_ms']:.2f} ms "
                    f"and /predict in {control:.2f} ms at p50.")
            if not sock["tcp_nodelay"] and control < 5 <= c1["p50_ms"]:
                text += (f" The shipped listening socket has no TCP_NODELAY (its protocol number is {sock['proto']}, "
                         f"not IPPROTO_TCP's {sock['ipproto_tcp']}, so asyncio does not set it on accepted connections "
                         "either): Nagle's algorithm holds the second write of each answer "
                         "until the client's delayed ACK, about 40 ms on Linux.")
            out.append(text)
    for key, r in runs.items():
        ratio = r["c16_throughput_ratio"]
        if ratio >= 2:
            continue
        b, n, d = r["batched"]["c16"], r["naive"]["c16"], r["direct"]
        saved = d["forward_batch1_ms"] - d["forward_batch16_ms_per_image"]
        cpu_naive = n["server_cpu_ms_per_request"] + n["client_cpu_ms_per_request"]
        out.append(
            f"{key}: batched/naive throughput at concurrency 16 is {ratio:.2f}x. Per request the naive server spends "
            f"{n['server_cpu_ms_per_request']:.2f} ms of CPU and the client {n['client_cpu_ms_per_request']:.2f} ms; "
            f"a forward pass of one image takes {d['forward_batch1_ms']:.3f} ms and, in a batch of 16, "
            f"{d['forward_batch16_ms_per_image']:.3f} ms per image, so batching saves at most {saved:.3f} ms of the "
            f"{cpu_naive:.2f} ms of CPU a request costs client and server together: "
            f"{cpu_naive / max(cpu_naive - saved, 1e-9):.2f}x at best when the cores are the limit "
            f"(they were {100 * n['cores_busy']:.0f}% busy under the naive server, {100 * b['cores_busy']:.0f}% under "
            f"the batched one, and other processes took {b['other_processes_cores']:.2f} cores meanwhile). When the "
            f"cores are not the limit, 16 clients that each wait the batched server's mean {b['mean_ms']:.1f} ms can "
            f"send at most {16000 / b['mean_ms']:.0f} requests/s, the naive one's {n['mean_ms']:.1f} ms "
            f"{16000 / n['mean_ms']:.0f}."
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000, help="measured requests per server at each concurrency")
    p.add_argument("--rounds", type=int, default=2, help="parts each run is split into, alternating batched and naive")
    args = p.parse_args()
    load_at_start = list(os.getloadavg())  # 1, 5, 15 minutes: other work on the machine shares its cores
    png = png_bytes()
    sock = listen_socket()
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(Path(tmp))
        for name, files in models.items():
            for runtime, path in files.items():
                key = f"{name}/{runtime}"
                with server(path, VARIANTS["batched"]) as batched, server(path, VARIANTS["naive"]) as naive:
                    servers = {"batched": batched, "naive": naive}
                    parts: dict[str, dict[int, list]] = {v: {c: [] for c in CONCURRENCY} for v in servers}
                    for (url, pid) in servers.values():
                        for c in CONCURRENCY:
                            load(url, pid, png, WARMUP, c)
                    for c in CONCURRENCY:
                        for i in range(args.rounds):
                            for variant, (url, pid) in servers.items():
                                n = args.requests // args.rounds + (i < args.requests % args.rounds)
                                parts[variant][c].append(load(url, pid, png, n, c))
                    floor = http_floor(batched[0], path, png)
                result = {v: {f"c{c}": summary(parts[v][c]) for c in CONCURRENCY} for v in servers}
                result["c16_throughput_ratio"] = (result["batched"]["c16"]["requests_per_s"]
                                                  / result["naive"]["c16"]["requests_per_s"])
                result["http_floor"] = floor
                result["direct"] = direct_timings(path, png)
                runs[key] = result
                for v in servers:
                    for c in CONCURRENCY:
                        s = result[v][f"c{c}"]
                        print(f"{key:22s} {v:7s} c{c:<2d} {s['requests_per_s']:7.1f} req/s  p50 {s['p50_ms']:6.2f} ms  "
                              f"p99 {s['p99_ms']:6.2f} ms  errors {s['errors']}", flush=True)
    all_runs = [s for r in runs.values() for v in VARIANTS for s in r[v].values()]
    targets = {
        "zero_errors": all(s["errors"] == 0 for s in all_runs),
        "tutorial_c1_p50_below_5ms": {k: r["batched"]["c1"]["p50_ms"] < 5 for k, r in runs.items()
                                      if k.startswith("tutorial/")},
        "c16_throughput_at_least_2x_naive": {k: r["c16_throughput_ratio"] >= 2 for k, r in runs.items()},
    }
    write_result("serve_load", {
        "method": f"`convnet serve` in its own process per (model, runtime, variant), the load from this process over "
                  f"loopback with httpx (a thread and a kept-alive TCP_NODELAY connection per concurrent client); "
                  f"{args.requests} POST /predict of one 32x32 PNG at concurrency 1, then {args.requests} at 16, after "
                  f"{WARMUP} warm-up requests at each; each run split into {args.rounds} parts "
                  "alternating the batched and the naive server; no core pinning: server and client share the cores, "
                  "and the CPU time of each is recorded",
        "models": "tutorial: --recipe tutorial; fast: --recipe fast (airnet); each trained 1 epoch on the embedded "
                  "sample (--data sample) and exported to ONNX here: their accuracy is poor and irrelevant, a forward "
                  "pass costs the same whatever the weights",
        "image": f"{SAMPLE_IMAGE.relative_to(REPO)} as PNG, {len(png)} bytes",
        "variants": {"batched": "convnet serve as shipped (micro-batching)",
                     "naive": f"convnet serve {' '.join(VARIANTS['naive'])}: one forward pass per request, "
                              "no batching"},
        "requests": args.requests,
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
        "rounds": args.rounds,
        "listen_socket": sock,
        "runs": runs,
        "targets_met": targets,
        "notes": notes(runs, sock),
    })


if __name__ == "__main__":
    main()
