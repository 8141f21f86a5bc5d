#!/usr/bin/env python3
"""Benchmark server.py: throughput, latency, memory and restart time.

For each player count it starts ``server.py --quiet`` on a free loopback port
with a fresh data directory holding that many players (written as a
snapshot by server.py's own code, one score each, so that 100,000 players take a second rather than
a minute of POSTs), then measures each endpoint for a few seconds with 8
keep-alive connections and prints a Markdown table for the README.

Uses wrk when it is installed (``apt-get install wrk``), else a slower
standard-library client that measures less precisely.  It starts the server
with the tests' helpers from conftest.py, so run it with the test command's
virtual environment:

    .venv/bin/python bench.py                      # 100, 1000 and 100000 players
    .venv/bin/python bench.py --players 1000 --duration 2
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import server as dino
from conftest import Proc  # the tests' server process

HERE = os.path.dirname(os.path.abspath(__file__))
CONNECTIONS = 8     # like ../shared/bench/sidebyside.py: wrk -t1 -c8
API_USERS = 1000    # users playing "random" in the /move measurement


def write_players(data_dir, players):
    """A data directory with ``players`` players p0, p1, ... of one score each, saved by server.py's own code."""
    state = dino.State(on_change=lambda: None)
    storage = dino.Storage(data_dir, state, log=print)
    for i in range(players):
        record = dino.score_record(f"p{i}", i % 50_000)
        record["seq"] = i + 1
        state.apply(record)
    storage.applied_seq = players
    storage.close()  # compacts: the snapshot is written as the server writes it


class Server(Proc):
    """server.py in a subprocess, as a user starts it, timed from launch to first answer."""

    def __init__(self, data_dir):
        self.started = time.perf_counter()
        super().__init__(data_dir, data_dir)

    def ready_after(self):
        self.wait_ready(timeout=60)
        return time.perf_counter() - self.started

    def request(self, method, path, body=None, headers=None):
        reply = self.call(method, path, body, headers)
        return reply.status, reply.body


# -- load generators ---------------------------------------------------------

def wrk(url, script, duration):
    """Requests/s, p50 ms and p99 ms from wrk; the Lua script builds each request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", "-s", file.name, url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(file.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"non-2xx answers while measuring {url}:\n{out}")

    def percentile(label):
        found = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        return float(found.group(1)) * {"us": 1e-3, "ms": 1, "s": 1000}[found.group(2)]
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), percentile("50"), percentile("99")


def python_load(port, make_request, duration):
    """The same measurement with threads of http.client when wrk is missing."""
    latencies = []
    stop_at = time.perf_counter() + duration

    def worker(seed):
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        while time.perf_counter() < stop_at:
            method, path, body, headers = make_request(rng)
            began = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status >= 300:
                raise RuntimeError(f"{method} {path} answered {response.status}")
            mine.append(time.perf_counter() - began)
        latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    cut = statistics.quantiles(latencies, n=100)
    return len(latencies) / duration, cut[49] * 1000, cut[98] * 1000


# Each workload as a wrk Lua script and as the same requests for python_load.
def workloads(players, tokens):
    post_lua = f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/score/p" .. math.random(0, {players - 1}), nil,
                    '{{"score": ' .. math.random(0, 100000) .. '}}')
end"""
    player_lua = f"""
request = function() return wrk.format("GET", "/score/p" .. math.random(0, {players - 1})) end"""
    token_list = ",".join(f'"{token}"' for token in tokens)
    move_lua = f"""
local tokens = {{{token_list}}}
request = function()
  local headers = {{}}
  headers["Authorization"] = "Bearer " .. tokens[math.random(1, #tokens)]
  headers["Content-Type"] = "application/x-www-form-urlencoded"
  return wrk.format("POST", "/move", headers, "game_id=random&move=" .. math.random(1, 100))
end"""

    def fixed(path):
        return f'request = function() return wrk.format("GET", "{path}") end', \
            lambda rng: ("GET", path, None, {})

    rows = [("GET /health-check",) + fixed("/health-check"),
            ("POST /score/<name>", post_lua,
             lambda rng: ("POST", f"/score/p{rng.randrange(players)}",
                          json.dumps({"score": rng.randrange(100_001)}), {"Content-Type": "application/json"})),
            ("GET /score/<name>", player_lua, lambda rng: ("GET", f"/score/p{rng.randrange(players)}", None, {})),
            ("GET /scores?limit=10",) + fixed("/scores?limit=10")]
    if players <= 1000:
        rows.append(("GET /scores (all)",) + fixed("/scores"))
    rows.append((f"POST /move ({len(tokens)} users)", move_lua,
                 lambda rng: ("POST", "/move", f"game_id=random&move={rng.randint(1, 100)}",
                              {"Authorization": f"Bearer {rng.choice(tokens)}",
                               "Content-Type": "application/x-www-form-urlencoded"})))
    return rows


def start_api_users(server, count):
    tokens = []
    for i in range(count):
        status, body = server.request("POST", f"/create/bot{i}")
        token = json.loads(body)["token"]
        server.request("POST", "/start", body="game_id=random",
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "application/x-www-form-urlencoded"})
        tokens.append(token)
    return tokens


def measure(players, duration, use_wrk):
    data_dir = tempfile.mkdtemp(prefix="dino-bench-")
    try:
        write_players(data_dir, players)
        server = Server(data_dir)
        server.ready_after()
        tokens = start_api_users(server, API_USERS)
        results = []
        for label, lua, make_request in workloads(players, tokens):
            if use_wrk:
                results.append((label,) + wrk(f"http://127.0.0.1:{server.port}", lua, duration))
            else:
                results.append((label,) + python_load(server.port, make_request, duration))
        rss = server.rss_mib()
        server.stop()
        restart = Server(data_dir)
        restart_s = restart.ready_after()
        restart.stop()
        return results, rss, restart_s
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", default="100,1000,100000",
                        help="comma-separated player counts (default 100,1000,100000)")
    parser.add_argument("--duration", type=float, default=4, help="seconds per measurement (default 4)")
    args = parser.parse_args(argv)
    use_wrk = shutil.which("wrk") is not None
    print(f"load generator: {'wrk -t1 -c8' if use_wrk else 'Python threads (8 connections); install wrk'}, "
          f"{args.duration:g} s per row, fsync on every acknowledged write; {os.cpu_count()} cores")
    print()
    print("| players | request | requests/s | p50 ms | p99 ms |")
    print("|---:|---|---:|---:|---:|")
    summary = []
    for players in (int(part) for part in args.players.split(",")):
        results, rss, restart_s = measure(players, int(args.duration) if use_wrk else args.duration, use_wrk)
        for label, rate, p50, p99 in results:
            print(f"| {players:,} | {label} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |", flush=True)
        summary.append(f"| {players:,} | {rss:.1f} MiB | {restart_s:.2f} s |")
    print()
    print("| players | resident memory after the run | restart to first answer |")
    print("|---:|---:|---:|")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
