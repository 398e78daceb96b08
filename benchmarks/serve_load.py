"""Load on ``fcpose serve``: N concurrent clients for a fixed time, dynamic batching against ``--max-batch 1``.

Two servers on 127.0.0.1, the same options but the batching, get the same closed-loop keep-alive load in turn
(rounds alternate A B, B A, ...; one loaded at a time); with one client both do the same work, so that row's
gain shows the machine's noise. ``model_only``: the same batching without HTTP, in this process. Both servers
must exit 0 on SIGTERM. What each number means: benchmarks/README.md and docs/serving.md. Bounded:
``len(clients) x 2 x rounds x seconds`` of load plus start-up; loopback only.

    python benchmarks/serve_load.py                       # demo model on the bundled scene, CPU
    python benchmarks/serve_load.py --weights W.pt --device cuda --image photo.jpg --clients 1,4,16,64
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from fcpose.assets import SCENE, asset
from fcpose.bench.machine import contention_since, cpu_times, loadavg, own_cpu_seconds
from fcpose.bench.people import write_json
from fcpose.cli import add_model_options

REPO = Path(__file__).resolve().parents[1]


def _proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (0 when unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Server:
    """``fcpose serve`` in a subprocess on 127.0.0.1 with a free port."""

    def __init__(self, name: str, args: list[str]):
        self.name = name
        cmd = [sys.executable, "-m", "fcpose", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=REPO)
        line = self.proc.stderr.readline()
        if "http://127.0.0.1:" not in line:
            self.proc.kill()
            raise SystemExit(f"{name}: the server did not start: {line.strip()} {self.proc.stderr.read()[-500:]}")
        self.port = int(line.split("http://127.0.0.1:")[1].split()[0])

    def request(self, path: str, body: bytes | None = None, ctype: str = "") -> str:
        """GET ``path``, or POST ``body`` of type ``ctype`` to it, on a fresh connection: the answer's text."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("GET" if body is None else "POST", path, body, {"Content-Type": ctype} if body else {})
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def batches(self) -> tuple[float, float]:
        """(network calls, images) so far, from /metrics."""
        values = dict(line.rsplit(" ", 1) for line in self.request("/metrics").splitlines() if not line.startswith("#"))
        return float(values["fcpose_batch_size_count"]), float(values["fcpose_batch_size_sum"])

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def _client(port: int, body: bytes, ctype: str, start: float, until: float, expect: int, out: list):
    """Requests one after the other on one keep-alive connection from ``start`` to ``until`` (perf_counter)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    time.sleep(max(0.0, start - time.perf_counter()))
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        ok = False
        try:
            conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            data = resp.read()
            ok = resp.status == 200 and json.loads(data)["num_drawn"] == expect
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        out.append((t0, time.perf_counter(), ok))
    conn.close()


def load(server: Server, clients: int, seconds: float, body: bytes, ctype: str, expect: int) -> dict:
    """``clients`` closed-loop clients for ``seconds``: ``(latency s, ok)`` of every request (those that finish
    after the window count too), the wall time from the start to the last answer, and the network calls and
    images the server counted meanwhile."""
    calls0, images0 = server.batches()
    results: list[list] = [[] for _ in range(clients)]
    t_start = time.perf_counter() + 0.2  # every client starts then
    threads = [threading.Thread(target=_client, args=(server.port, body, ctype, t_start, t_start + seconds, expect,
                                                      out)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls1, images1 = server.batches()
    done = [r for out in results for r in out]
    return {"requests": [(b - a, ok) for a, b, ok in done], "wall": max(b for _, b, _ in done) - t_start,
            "calls": calls1 - calls0, "images": images1 - images0}


def summary(clients: int, rounds: list[dict]) -> dict:
    """One server and client count over its rounds: images/s over their summed wall time, latency percentiles
    over all their requests."""
    requests = [r for rnd in rounds for r in rnd["requests"]]
    latency = np.array([seconds * 1000.0 for seconds, _ in requests])
    failed = sum(not ok for _, ok in requests)
    wall = sum(rnd["wall"] for rnd in rounds)
    calls = sum(rnd["calls"] for rnd in rounds)
    return {
        "clients": clients, "requests": len(requests), "failed": failed, "seconds": round(wall, 2),
        "images_per_s": round((len(requests) - failed) / wall, 2),
        "latency_ms": {f"p{q}": round(float(np.percentile(latency, q)), 1) for q in (50, 90, 99)},
        "images_per_call": round(sum(rnd["images"] for rnd in rounds) / max(1.0, calls), 2),
        "images_per_s_by_round": [round(sum(ok for _, ok in rnd["requests"]) / rnd["wall"], 2) for rnd in rounds],
    }


def model_only(args, image: str, reps: int) -> dict:
    """The same batching without HTTP, in this process while the servers idle: per-image time of
    ``predict([img] * B)`` against ``B x predict([img])``, alternating, ``reps`` times each (median)."""
    import torch

    from fcpose.data.images import read_image
    from fcpose.inference.backends import load_predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = load_predictor(args.backend, args.weights, device=args.device, min_size=args.size,
                               max_size=args.max_size, batch_size=args.max_batch)
    img = read_image(image)
    predictor.predict([img] * args.max_batch)  # warm-up
    single, batched = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(args.max_batch):
            predictor.predict([img])
        t1 = time.perf_counter()
        predictor.predict([img] * args.max_batch)
        t2 = time.perf_counter()
        single.append((t1 - t0) / args.max_batch * 1000.0)
        batched.append((t2 - t1) / args.max_batch * 1000.0)
    one, many = float(np.median(single)), float(np.median(batched))
    return {"batch": args.max_batch, "reps": reps, "ms_per_image_batch_1": round(one, 1),
            f"ms_per_image_batch_{args.max_batch}": round(many, 1), "gain": round(one / many, 2),
            "torch_threads": torch.get_num_threads()}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="fcpose_synth_demo")
    ap.add_argument("--image", default=str(asset(SCENE)))
    ap.add_argument("--clients", default="1,4,16", help="client counts (default 1,4,16)")
    ap.add_argument("--seconds", type=float, default=4.0, help="load per round, client count and server (default 4)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the servers alternate within each (default 3)")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    add_model_options(ap, "device", "backend", "threads", "size", "max-size")  # each server's, as `fcpose serve`
    ap.add_argument("--warmup", type=int, default=3, help="requests per server before measuring (default 3)")
    ap.add_argument("--model-reps", type=int, default=3,
                    help="repetitions of the model-only comparison without HTTP (default 3; 0 skips it)")
    ap.add_argument("--note", default="")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    args = ap.parse_args()
    if not 1 <= args.seconds <= 60 or not 1 <= args.rounds <= 10:
        raise SystemExit("--seconds must be in [1, 60] and --rounds in [1, 10]: the benchmark is bounded")
    args.clients = [int(c) for c in args.clients.split(",")]
    if not all(1 <= c <= 64 for c in args.clients):
        raise SystemExit("client counts must be in [1, 64]")
    return args


def server_options(args) -> tuple[list[str], dict[str, list[str]]]:
    """The options both servers share, and each one's batching options."""
    common = ["--weights", args.weights, "--device", args.device, "--backend", args.backend, "--max-queue", "256"]
    for flag, value in (("--threads", args.threads), ("--size", args.size), ("--max-size", args.max_size)):
        if value is not None:
            common += [flag, str(value)]
    return common, {"batched": ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)],
                    "unbatched": ["--max-batch", "1", "--max-wait-ms", "0"]}


def warm_up(servers: dict[str, Server], body: bytes, ctype: str, requests: int) -> int | None:
    """``requests`` answers from every server; all must find the same people (returned)."""
    expect = None
    for server in servers.values():
        for _ in range(requests):
            drawn = json.loads(server.request("/v1/predict", body, ctype))["num_drawn"]
            expect = drawn if expect is None else expect
            if drawn != expect:
                raise SystemExit(f"{server.name} found {drawn} people, expected {expect}")
    return expect


def load_rounds(servers: dict[str, Server], args, body: bytes, ctype: str, expect: int) -> tuple[dict, dict]:
    """Every client count, ``args.rounds`` rounds, the servers alternating: ``{server: {clients: [round]}}`` and
    the contention meanwhile (the servers' CPU time counts as ours)."""
    stat0, load0, own0 = cpu_times(), loadavg(), own_cpu_seconds()
    cpu0 = {name: _proc_cpu_seconds(s.proc.pid) for name, s in servers.items()}
    rounds: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in args.clients} for name in servers}
    for c in args.clients:
        for r in range(args.rounds):
            for name in (list(servers) if r % 2 == 0 else list(servers)[::-1]):
                got = load(servers[name], c, args.seconds, body, ctype, expect)
                rounds[name][c].append(got)
                n, bad = len(got["requests"]), sum(not ok for _, ok in got["requests"])
                print(f"[serve_load] clients {c:3d} round {r + 1}: {name:9s} {(n - bad) / got['wall']:7.2f} "
                      f"images/s, {got['images'] / max(1.0, got['calls']):.2f} images/call, {bad} failed of {n}",
                      file=sys.stderr, flush=True)
    children = sum(_proc_cpu_seconds(s.proc.pid) - cpu0[name] for name, s in servers.items())
    return rounds, contention_since(stat0, load0, own0 - children)


def print_table(report: dict, max_batch: int) -> None:
    print(f"{'clients':>7s} | {'batched img/s':>13s} {'p50 ms':>7s} {'p99 ms':>7s} {'img/call':>8s} | "
          f"{'max-batch 1 img/s':>17s} {'p50 ms':>7s} {'p99 ms':>7s} | gain")
    for row in report["results"]:
        b, u = row["batched"], row["unbatched"]
        print(f"{row['clients']:7d} | {b['images_per_s']:13.2f} {b['latency_ms']['p50']:7.1f} "
              f"{b['latency_ms']['p99']:7.1f} {b['images_per_call']:8.2f} | {u['images_per_s']:17.2f} "
              f"{u['latency_ms']['p50']:7.1f} {u['latency_ms']['p99']:7.1f} | {row['batching_gain']}x")
    direct, contention = report["model_only"], report["contention"]
    if direct:
        print(f"model only (no HTTP): {direct['ms_per_image_batch_1']} ms per image alone, "
              f"{direct[f'ms_per_image_batch_{max_batch}']} ms in batches of {max_batch}: {direct['gain']}x")
    print(f"failed requests: {report['failed_requests']}; servers exited with {report['server_exit_codes']}; other "
          f"processes used {contention.get('others_cpu_pct')}% of the CPUs (load average "
          f"{contention.get('loadavg_start')} -> {contention.get('loadavg_end')})")


def main() -> int:
    args = parse_args()
    body = Path(args.image).read_bytes()
    ctype = "image/png" if args.image.lower().endswith(".png") else "image/jpeg"
    common, configs = server_options(args)
    servers = {name: Server(name, common + extra) for name, extra in configs.items()}
    try:
        expect = warm_up(servers, body, ctype, args.warmup)
        model = json.loads(servers["batched"].request("/v1/model"))
        direct = model_only(args, args.image, args.model_reps) if args.model_reps > 0 else None
        rounds, contention = load_rounds(servers, args, body, ctype, expect)
    finally:
        exits = {name: s.stop() for name, s in servers.items()}
    table = []
    for c in args.clients:
        b, u = summary(c, rounds["batched"][c]), summary(c, rounds["unbatched"][c])
        table.append({"clients": c, "batched": b, "unbatched": u,
                      "batching_gain": round(b["images_per_s"] / u["images_per_s"], 2) if u["images_per_s"] else None})
    failed = sum(row[name]["failed"] for row in table for name in configs)
    report = {
        "benchmark": "serve_load",
        "weights": Path(args.weights).name, "image": Path(args.image).name, "people_drawn": expect,
        "model": {k: model.get(k) for k in ("preset", "backend", "device", "input", "trained_on")},
        "servers": configs, "seconds_per_round": args.seconds, "rounds": args.rounds, "threads": args.threads,
        "failed_requests": failed, "server_exit_codes": exits, "results": table, "model_only": direct,
        "contention": contention, "cpus": os.cpu_count(), "note": args.note,
    }
    print_table(report, args.max_batch)
    print(f"wrote {write_json(report, args.json)}", file=sys.stderr)
    return 0 if failed == 0 and all(code == 0 for code in exits.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
