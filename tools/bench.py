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

    .venv/bin/python tools/bench.py                      # 100, 1000 and 100000 players
    .venv/bin/python tools/bench.py --players 1000 --duration 2
    .venv/bin/python tools/bench.py --only console,reposts,tickets   # many clients against one writer
"""

import argparse
import collections
import contextlib
import functools
import socket
import http.client
import itertools
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # server.py and conftest.py
import server as dino  # noqa: E402
from conftest import Proc, count_unverified  # noqa: E402  the tests' server process and the teacher's switch
import bench_live  # noqa: E402  live pages and the class race

CONNECTIONS = 8     # like ../shared/bench/sidebyside.py: wrk -t1 -c8
API_USERS = 1000    # users playing "random" in the /move measurement


def write_players(data_dir, players, records=()):
    """A data directory with ``players`` players p0, p1, ... of one score each, saved by server.py's own code.

    ``records`` (journal records such as tickets) are applied after the players.
    """
    state = dino.State(on_change=lambda: None)
    storage = dino.Storage(data_dir, state, log=print)
    seq = 0
    for seq, record in enumerate(itertools.chain((dino.score_record(f"p{i}", i % 50_000) for i in range(players)),
                                                 records), start=1):
        record["seq"] = seq
        state.apply(record)
    storage.applied_seq = seq
    storage.close()  # compacts: the snapshot is written as the server writes it


class Server(Proc):
    """server.py in a subprocess, as a user starts it, timed from launch to first answer.

    Per-client limits are off: every request here comes from one loopback
    address, which the limits would otherwise throttle as one greedy device.
    """

    def __init__(self, data_dir):
        self.started = time.perf_counter()
        super().__init__(data_dir, data_dir, "--client-limits", "off")

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


# -- listings, verified runs and the class ------------------------------------

ATTACK_S = 10          # the listings attack lasts this long
QUIET_S = 5            # the top 10 measured alone for this long first
VIEWER_PAUSE_S = 0.01  # the top-10 viewer's pause between requests: a page, not a load generator
MINUTE_TICKS = 3600    # one minute of play at 60 ticks a second
BURST_RUNS = 1000      # one-minute runs posted as fast as 8 threads can
CLASS_SIZE = 30        # children posting a run at the same moment
CLASS_WAIT_S = 5       # their tickets were taken this long before
IDLE_CRASH_TICKS = 267  # a run without a key pressed meets its first cactus here, whatever the seed
BOT_LEADS = (4, 5, 3, 6, 4.5, 3.5, 5.5, 7)  # the bot's reaction distances in ticks, tried in turn until one lasts the minute


def percentiles(latencies):
    """p50, p90 and p99 of latencies in seconds, in milliseconds."""
    cut = statistics.quantiles(latencies, n=100, method="inclusive")
    return cut[49] * 1000, cut[89] * 1000, cut[98] * 1000


class Client:
    """One keep-alive connection that reads whole answers; ``send`` refuses anything but 2xx.

    ``source`` is the loopback address to connect from (a device of its own);
    ``headers`` go with every request (the teacher's key).
    """

    def __init__(self, port, source=None, headers=None):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120,
                                                     source_address=(source, 0) if source else None)
        self.headers = dict(headers or {})

    def answer(self, method, path, body=None):
        """(status, body) of one request, whatever the status."""
        headers = dict(self.headers, **({"Content-Type": "application/json"} if body is not None else {}))
        self.connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def send(self, method, path, body=None):
        status, data = self.answer(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path} answered {status}: {data[:300]!r}")
        return data

    def close(self):
        self.connection.close()


def watch_top10(port, stop, pause=VIEWER_PAUSE_S, path="/scores?limit=10"):
    """Latencies of GET ``path`` (the top 10), one at a time, until ``stop`` is set."""
    client, latencies = Client(port), []
    while not stop.is_set():
        began = time.perf_counter()
        client.send("GET", path)
        latencies.append(time.perf_counter() - began)
        time.sleep(pause)
    return latencies


def in_thread(function, *args):
    """Run function(*args) in a thread; join() on the returned thread, then read .result."""
    thread = threading.Thread(target=lambda: setattr(thread, "result", function(*args)))
    thread.start()
    return thread


def listing_attacker(port, kind, players, stop, counts):
    """Ask for one kind of long listing again and again until ``stop`` is set."""
    rng, client = random.Random(kind), Client(port)
    letters = "abcdefghijklmnopqrstuvwxyz"
    paths = {"search": lambda: "/players?q=" + "".join(rng.choice(letters) for _ in range(3)),
             "scores": lambda: f"/scores?offset={rng.randrange(players)}",
             "players": lambda: f"/players?offset={rng.randrange(players)}",
             "metrics": lambda: "/allmetrics"}
    while not stop.is_set():
        client.send("GET", paths[kind]())
        counts[kind] += 1


def top10_under_attack(players=100_000, attack_s=ATTACK_S):
    """p50/p90/p99 of the top 10 alone, then while four threads hammer the long listings.

    The attackers ask for /players?q=<3 random letters> (a scan of every name),
    /scores?offset=<random> and /players?offset=<random> (streamed to the end)
    and /allmetrics (API_USERS users), each in a loop on its own connection.
    """
    data_dir = tempfile.mkdtemp(prefix="dino-bench-")
    try:
        write_players(data_dir, players)
        server = Server(data_dir)
        server.ready_after()
        start_api_users(server, API_USERS)
        stop = threading.Event()
        viewer = in_thread(watch_top10, server.port, stop)
        time.sleep(QUIET_S)
        stop.set()
        viewer.join()
        quiet = viewer.result
        stop = threading.Event()
        counts = dict.fromkeys(("search", "scores", "players", "metrics"), 0)
        attackers = [in_thread(listing_attacker, server.port, kind, players, stop, counts) for kind in counts]
        viewer = in_thread(watch_top10, server.port, stop)
        time.sleep(attack_s)
        stop.set()
        for thread in attackers + [viewer]:
            thread.join()
        server.stop()
        return {"quiet": quiet, "attack": viewer.result, "counts": counts, "attack_s": attack_s}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def bot_inputs(config, seed, play_ticks, lead, width=600):
    """Key changes of a bot that jumps the next low obstacle and ducks a middle pterodactyl, then lets go.

    It reacts when the obstacle is ``lead`` ticks away at the current speed.

    It plays ``play_ticks`` ticks, then presses nothing, so the run ends at the
    next obstacle; returns (inputs, score, crash tick) from server.replay_run
    (replayed up to two minutes past ``play_ticks``), or None when the bot
    crashed before ``play_ticks``.
    """
    rules = dino.SimRules(config)
    trex_x, front = rules.trex["x"], rules.trex["x"] + rules.trex["w"]
    world = dino.SimWorld(rules, seed, width)
    inputs, keys, jumped_at = [], (0, 0), 0
    while not world.crashed and world.ticks < play_ticks:
        ahead = [o for o in world.obstacles if o.x + o.w > trex_x]
        jump = duck = 0
        if world.jumping:
            jump = keys[0] if world.ticks - jumped_at < 6 else 0   # hold a few ticks, then let go
        elif ahead:
            nearest, speed = ahead[0], world.speed
            distance = nearest.x - front
            if nearest.type["id"] != "ptero" or nearest.y >= 90:
                jump = int(distance < lead * speed)
            elif nearest.y >= 60:                                   # too low to run under standing
                duck = int(distance < lead * 1.5 * speed)
        if jump and not world.jumping:
            jumped_at = world.ticks
        if (jump, duck) != keys:
            inputs.append([world.ticks, jump, duck])
            keys = (jump, duck)
        dino.sim_tick(world, bool(jump), bool(duck))
    if world.crashed:
        return None
    if keys != (0, 0):
        inputs.append([world.ticks, 0, 0])
    result = dino.replay_run(config, seed, width, inputs, play_ticks + 2 * MINUTE_TICKS)
    return inputs, result["score"], result["ticks"]


def minute_run(config, seed):
    """A bot's run from ``seed`` that lasts a little over a minute: (inputs, score, crash tick)."""
    for lead in BOT_LEADS:
        run = bot_inputs(config, seed, MINUTE_TICKS, lead)
        if run is not None:
            return run
    raise RuntimeError(f"the bot crashed before a minute of play on seed {seed}")


def verification_cpu(seeds=20):
    """CPU ms of server.replay_run per minute of play (3,600 ticks), over bot runs that last the minute."""
    config = dino.read_sim_config()
    costs = []
    for seed in range(1, seeds + 1):
        inputs, _, _ = minute_run(config, seed)
        began = time.process_time()
        result = dino.replay_run(config, seed, 600, inputs, MINUTE_TICKS)
        costs.append(time.process_time() - began)
        if result["ticks"] != MINUTE_TICKS or result["crashed"]:
            raise RuntimeError(f"seed {seed}: the replay did not last the minute")
    costs.sort()
    return {"runs": seeds, "median": statistics.median(costs) * 1000, "max": costs[-1] * 1000,
            "inputs": len(inputs)}


def post_all(port, posts, threads=CONNECTIONS):
    """POST each (path, body) of ``posts`` from ``threads`` keep-alive connections; per-post latencies."""
    queue = list(posts)
    lock, latencies = threading.Lock(), []

    def worker():
        client, mine = Client(port), []
        while True:
            with lock:
                if not queue:
                    break
                path, body = queue.pop()
            began = time.perf_counter()
            client.send("POST", path, body)
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)
    workers = [in_thread(worker) for _ in range(threads)]
    for thread in workers:
        thread.join()
    return latencies


def take_tickets(port, count):
    client = Client(port)
    return [json.loads(client.send("POST", "/runs")) for _ in range(count)]


def wait_for_wall_time(taken_at, ticks):
    """Sleep until a run of ``ticks`` ticks from a ticket taken at ``taken_at`` passes the wall-time rule."""
    ready_at = taken_at + ticks / 60 - dino.RUN_SLACK_S + 1.5   # issued_at is whole seconds; keep a margin
    time.sleep(max(0.0, ready_at - time.time()))


def verified_burst(runs=BURST_RUNS, players=1000):
    """Verified one-minute runs per second, posted from 8 threads, each on a ticket of its own.

    The tickets are taken first; the bot's runs for their seeds are built
    while the minute of wall time passes; then every run is posted as fast
    as the server takes them, while a viewer measures the top 10.
    """
    config = dino.read_sim_config()
    data_dir = tempfile.mkdtemp(prefix="dino-bench-")
    try:
        write_players(data_dir, players)
        server = Server(data_dir)
        server.ready_after()
        tickets = take_tickets(server.port, runs)
        taken_at = time.time()
        posts, longest = [], 0
        for i, ticket in enumerate(tickets):
            try:
                inputs, score, ticks = minute_run(config, ticket["seed"])
            except RuntimeError:  # a seed the bot cannot play for a minute: its ticket stays unused
                continue
            longest = max(longest, ticks)
            posts.append((f"/score/runner{i}", {"score": score, "run": ticket["run"], "width": 600,
                                                "inputs": inputs}))
        wait_for_wall_time(taken_at, longest)
        stop = threading.Event()
        viewer = in_thread(watch_top10, server.port, stop)
        began = time.perf_counter()
        latencies = post_all(server.port, posts)
        elapsed = time.perf_counter() - began
        stop.set()
        viewer.join()
        server.stop()
        return {"runs": len(posts), "rate": len(posts) / elapsed, "posts": latencies, "top10": viewer.result}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def class_posts_at_once(players=1000, size=CLASS_SIZE):
    """The top 10's latency before and while a class of 30 posts a verified run each at the same moment.

    Each child took a ticket CLASS_WAIT_S before and posts a run without a key
    pressed, which ends at tick 267 (about 4.5 s), so the wall-time rule holds.
    """
    config = dino.read_sim_config()
    data_dir = tempfile.mkdtemp(prefix="dino-bench-")
    try:
        write_players(data_dir, players)
        server = Server(data_dir)
        server.ready_after()
        tickets = take_tickets(server.port, size)
        stop = threading.Event()
        viewer = in_thread(watch_top10, server.port, stop, 0)
        posts = []
        for i, ticket in enumerate(tickets):
            score = dino.replay_run(config, ticket["seed"], 600, [], IDLE_CRASH_TICKS + 1)["score"]
            posts.append((f"/score/child{i}", {"score": score, "run": ticket["run"], "width": 600, "inputs": []}))
        time.sleep(CLASS_WAIT_S)
        stop.set()
        viewer.join()
        before = viewer.result
        start = threading.Barrier(size + 1)
        stop = threading.Event()

        def child(path, body):
            client = Client(server.port)
            start.wait()
            began = time.perf_counter()
            client.send("POST", path, body)
            return time.perf_counter() - began
        children = [in_thread(child, path, body) for path, body in posts]
        viewer = in_thread(watch_top10, server.port, stop, 0)
        start.wait()
        began = time.perf_counter()
        for thread in children:
            thread.join()
        all_in = time.perf_counter() - began
        stop.set()
        viewer.join()
        server.stop()
        return {"before": before, "during": viewer.result, "all_in": all_in,
                "slowest_post": max(thread.result for thread in children)}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def write_verified_players(data_dir, players):
    """Like write_players, but every score a verified run: its ticket, its line in runs.jsonl, its run id.

    Every player posts the same bot's one-minute run (a ticket each), so the
    runs file holds ``players`` lines of a real run's size.
    """
    config = dino.read_sim_config()
    inputs, score, _ = minute_run(config, 1)
    state = dino.State(on_change=lambda: None)
    storage = dino.Storage(data_dir, state, log=print)
    now = int(time.time())
    with open(os.path.join(data_dir, dino.RUNS_FILE), "w") as runs:
        for i in range(players):
            name, run_id = f"p{i}", f"run{i:013d}"  # 16 characters, as secrets.token_urlsafe(12)
            runs.write(json.dumps({"id": run_id, "name": name, "score": score, "seed": 1, "width": 600,
                                   "inputs": inputs, "at": now}, separators=(",", ":")) + "\n")
            for seq, record in enumerate((dino.ticket_record(run_id, 1, now),
                                          dino.score_record(name, score, run=run_id, at=now,
                                                            device=f"{i:08x}")),
                                         start=2 * i + 1):
                record["seq"] = seq
                state.apply(record)
    storage.applied_seq = 2 * players
    storage.close()


def memory_with_runs(players=100_000):
    """Resident memory and restart time of the server with a verified run kept for each of ``players``."""
    data_dir = tempfile.mkdtemp(prefix="dino-bench-")
    try:
        write_verified_players(data_dir, players)
        runs_mib = os.path.getsize(os.path.join(data_dir, dino.RUNS_FILE)) / 2**20
        server = Server(data_dir)
        restart_s = server.ready_after()
        client = Client(server.port)
        client.send("GET", "/scores?limit=10")
        client.send("GET", f"/runs/run{players - 1:013d}")
        rss = server.rss_mib()
        server.stop()
        return {"players": players, "rss": rss, "restart_s": restart_s, "runs_mib": runs_mib}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# -- the teacher's console, reposted refused runs, a drained ticket pool ------

CONSOLE_PLAYERS = dino.MAX_PLAYERS   # the board a flood of junk names once filled
CONSOLE_S = 10                       # each phase of the console measurement lasts this long
CLASS_POST_S = 0.1                   # ... and in its last phase a class posts a score this often
TOP10 = "/players?limit=10"          # the class board's top 10, as the big screen and the game page ask
REPOST_MINUTES = 5                   # the refused runs are this long: a child's long run
REPOST_TICKETS = 200                 # old tickets the reposting device holds, REPLAYS_PER_TICKET replays each
REPOSTERS = 4                        # connections the reposting device posts from at once
REPOST_DEVICE = "127.0.5.1"          # ... its one address
TICKETS_ISSUED_S = 3600              # the old tickets were taken an hour before: every run fits in that time
FLOOD_ADDRESSES = 5_100              # devices that each take ...
FLOOD_TICKETS = dino.RUN_TICKETS[0]  # ... as many tickets as their own limit gives at once
FLOOD_THREADS = 16                   # connections the flood uses at a time
NEW_DEVICE_TICKETS = 10              # tickets a new device asks for after the flood


def teacher_headers(data_dir):
    with open(os.path.join(data_dir, dino.TEACHER_FILE), encoding="utf-8") as file:
        return {"Authorization": "Bearer " + json.load(file)["key"]}


def watch_alone(port, seconds):
    """Top 10 latencies with nothing else going on."""
    stop = threading.Event()
    viewer = in_thread(watch_top10, port, stop, VIEWER_PAUSE_S, TOP10)
    time.sleep(seconds)
    stop.set()
    viewer.join()
    return viewer.result


def watch_while(port, seconds, *loads):
    """Top 10 latencies while each load(stop) runs in a thread of its own; (latencies, the loads' results)."""
    stop = threading.Event()
    threads = [in_thread(load, stop) for load in loads]
    viewer = in_thread(watch_top10, port, stop, VIEWER_PAUSE_S, TOP10)
    time.sleep(seconds)
    stop.set()
    for thread in threads + [viewer]:
        thread.join()
    return viewer.result, [thread.result for thread in threads]


def refresh_console(port, headers, stop):
    """The teacher's console: GET /admin/players again and again; its latencies."""
    client, latencies = Client(port, headers=headers), []
    while not stop.is_set():
        began = time.perf_counter()
        client.send("GET", "/admin/players")
        latencies.append(time.perf_counter() - began)
    return latencies


def class_posting(port, stop, players):
    """A class posting scores for players already on the board, one every CLASS_POST_S; the number posted."""
    client, rng, posted = Client(port), random.Random(15), 0
    while not stop.is_set():
        client.send("POST", f"/score/p{rng.randrange(players)}", {"score": rng.randrange(100_000)})
        posted += 1
        time.sleep(CLASS_POST_S)
    return posted


def top10_while_console_refreshes(players=CONSOLE_PLAYERS, seconds=CONSOLE_S):
    """The top 10 on a full board alone, while the teacher's console refreshes, and while a class posts too."""
    data_dir = tempfile.mkdtemp(prefix="dino-bench-")
    try:
        began = time.perf_counter()
        write_players(data_dir, players)
        built_s = time.perf_counter() - began
        server = Server(data_dir)
        server.ready_after()
        count_unverified(server)  # the board's players are plain posts
        headers = teacher_headers(data_dir)
        console = functools.partial(refresh_console, server.port, headers)
        phases = [("alone", watch_alone(server.port, seconds), None, None)]
        top10, (refreshes,) = watch_while(server.port, seconds, console)
        phases.append(("console refreshing", top10, refreshes, None))
        top10, (refreshes, posted) = watch_while(server.port, seconds, console,
                                                 functools.partial(class_posting, server.port, players=players))
        phases.append((f"console refreshing, a class posting ({posted} scores)", top10, refreshes, posted))
        rss = server.rss_mib()
        server.stop()
        return {"phases": phases, "rss": rss, "built_s": built_s}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def long_run(config, minutes=REPOST_MINUTES):
    """(seed, inputs, score) of a bot's run that lasts ``minutes`` of play: a long run to post."""
    for seed in itertools.count(1):
        for lead in BOT_LEADS:
            run = bot_inputs(config, seed, minutes * MINUTE_TICKS, lead)
            if run is not None:
                return seed, run[0], run[1]


def server_cpu_s(server):
    """CPU seconds the server process has used (user and system)."""
    with open(f"/proc/{server.p.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def repost(port, stop, posts):
    """One of the reposting device's connections: post each (ticket, score) of ``posts`` until ``stop``.

    Returns the answers it got, by status.
    """
    client, answers = Client(port, source=REPOST_DEVICE), collections.Counter()
    for path, body in itertools.cycle(posts):
        if stop.is_set():
            break
        status, _ = client.answer("POST", path, body)
        answers[status] += 1
    return answers


def top10_while_a_device_reposts(players=1000):
    """A child's top 10 alone, then while one device reposts refused long runs from REPOSTERS connections.

    The device holds REPOST_TICKETS tickets taken an hour before (written in the
    data directory), so each run fits in its ticket's time and is replayed in
    full.  It posts the bot's REPOST_MINUTES-minute run with a wrong score:
    first the same refused run again and again, then a new wrong score each
    time on every ticket in turn.
    """
    config = dino.read_sim_config()
    seed, inputs, score = long_run(config)
    data_dir = tempfile.mkdtemp(prefix="dino-bench-")
    try:
        issued_at = int(time.time()) - TICKETS_ISSUED_S
        run_ids = [f"old{i:013d}" for i in range(REPOST_TICKETS)]
        write_players(data_dir, players, [dino.ticket_record(run_id, seed, issued_at) for run_id in run_ids])
        server = Server(data_dir)
        server.ready_after()
        count_unverified(server)

        def body(run_id, wrong):
            return {"score": score + wrong, "run": run_id, "width": 600, "inputs": inputs}
        same = [("/score/Mallory", body(run_ids[0], 1))]
        fresh = [("/score/Mallory", body(run_id, wrong))
                 for run_id in run_ids[1:] for wrong in range(1, dino.REPLAYS_PER_TICKET + 2)]
        # Each connection takes its own share of the tickets, so no two replay one ticket.
        shares = [fresh[i::REPOSTERS] for i in range(REPOSTERS)]
        phases = [("alone", watch_alone(server.port, QUIET_S), None, None)]
        for label, posts in ((f"the same refused run reposted ({REPOSTERS} connections)", [same] * REPOSTERS),
                             (f"a new wrong score each post on {REPOST_TICKETS - 1} old tickets "
                              f"({REPOSTERS} connections)", shares)):
            cpu = server_cpu_s(server)
            top10, answers = watch_while(server.port, ATTACK_S,
                                         *(functools.partial(repost, server.port, posts=share) for share in posts))
            phases.append((label, top10, sum(answers, collections.Counter()), server_cpu_s(server) - cpu))
        server.stop()
        return {"phases": phases, "inputs": len(inputs)}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def flood_address(n):
    return f"127.{20 + n // 62_500}.{n // 250 % 250}.{n % 250 + 1}"


def take_flood_tickets(port, first, addresses, each, statuses, lock):
    """From every FLOOD_THREADS-th address from ``first``: ``each`` tickets on one keep-alive connection."""
    mine = collections.Counter()
    for n in range(first, addresses, FLOOD_THREADS):
        client = Client(port, source=flood_address(n))
        for _ in range(each):
            mine[client.answer("POST", "/runs")[0]] += 1
        client.close()
    with lock:
        statuses.update(mine)


def new_device_tickets(server, source):
    """How many of NEW_DEVICE_TICKETS ticket requests a device never seen before gets (201), and the tickets."""
    client, tickets = Client(server.port, source=source), []
    for _ in range(NEW_DEVICE_TICKETS):
        status, data = client.answer("POST", "/runs")
        if status == 201:
            tickets.append(json.loads(data))
    client.close()
    return tickets


def tickets_after_a_flood(addresses=FLOOD_ADDRESSES, each=FLOOD_TICKETS):
    """Whether a new device gets a ticket, and its run is kept, after a flood of tickets from many addresses.

    Per-device limits are on: each address stays within its own.
    """
    config = dino.read_sim_config()
    with tempfile.TemporaryDirectory(prefix="dino-bench-") as data_dir:
        server = Proc(data_dir, data_dir)
        server.wait_ready(timeout=60)
        statuses, lock = collections.Counter(), threading.Lock()
        began = time.perf_counter()
        flooders = [in_thread(take_flood_tickets, server.port, first, addresses, each, statuses, lock)
                    for first in range(FLOOD_THREADS)]
        for thread in flooders:
            thread.join()
        flood_s = time.perf_counter() - began
        taken_at = time.time()
        tickets = new_device_tickets(server, "127.0.6.1")
        kept = None
        if tickets:
            run = dino.replay_run(config, tickets[0]["seed"], 600, [], IDLE_CRASH_TICKS + 1)
            wait_for_wall_time(taken_at, run["ticks"])
            status, _ = Client(server.port, source="127.0.6.1").answer(
                "POST", "/score/Newcomer", {"score": run["score"], "run": tickets[0]["run"], "width": 600,
                                            "inputs": []})
            kept = status
        rss = server.rss_mib()
        server.stop()
        server.start()
        after_restart = new_device_tickets(server, "127.0.6.2")
        server.stop()
    return {"statuses": statuses, "flood_s": flood_s, "new_device": len(tickets), "kept": kept,
            "after_restart": len(after_restart), "rss": rss}


# -- reports -------------------------------------------------------------------

def print_table(title, header, rows, left=()):
    """A measurement as a Markdown table: its title, then each row as soon as it is measured.

    Columns are right-aligned, except those whose index is in ``left``.
    """
    print(title)
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i in left else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |", flush=True)
    print()


def report_attack(players, repeat):
    def rows():
        for run in range(1, repeat + 1):
            result = top10_under_attack(players)
            counts = result["counts"]
            for label, latencies, attack in (("alone", result["quiet"], "-"),
                                             ("under attack", result["attack"], " / ".join(
                                                 f"{counts[kind]:,}" for kind in counts))):
                p50, p90, p99 = percentiles(latencies)
                yield [str(run), label, f"{len(latencies):,}", f"{p50:.2f}", f"{p90:.2f}", f"{p99:.2f}", attack]
    print_table(f"Top 10 (GET /scores?limit=10, one viewer, {VIEWER_PAUSE_S * 1000:.0f} ms between requests) with "
                f"{players:,} players, alone for {QUIET_S} s, then while four threads ask for long listings for "
                f"{ATTACK_S} s:",
                ["run", "while", "requests", "p50 ms", "p90 ms", "p99 ms",
                 "attack requests (q= / scores offset= / players offset= / allmetrics)"], rows(), left=(1, 6))


def report_verify(repeat):
    def rows():
        for run in range(1, repeat + 1):
            result = verification_cpu()
            yield [str(run), str(result["runs"]), str(result["inputs"]), f"{result['median']:.1f}",
                   f"{result['max']:.1f}"]
    print_table(f"Verification cost: CPU time of server.replay_run over {MINUTE_TICKS:,} ticks (one minute of play) "
                "of a bot's run that lasts the minute:",
                ["run", "runs", "key changes a run", "median ms per minute of play", "slowest ms"], rows())


def report_burst(repeat):
    def rows():
        for run in range(1, repeat + 1):
            result = verified_burst()
            post50, _, post99 = percentiles(result["posts"])
            top50, _, top99 = percentiles(result["top10"])
            yield [str(run), f"{result['runs']:,}", f"{result['rate']:,.0f}", f"{post50:.1f}", f"{post99:.1f}",
                   f"{top50:.2f}", f"{top99:.2f}"]
    print_table(f"Verified one-minute runs: {BURST_RUNS:,} tickets taken, a minute waited, then each run posted once "
                f"from {CONNECTIONS} keep-alive connections; a viewer reads the top 10 meanwhile:",
                ["run", "runs", "verified runs/s", "post p50 ms", "post p99 ms", "top 10 p50 ms", "top 10 p99 ms"],
                rows())


def report_class(repeat):
    def rows():
        for run in range(1, repeat + 1):
            result = class_posts_at_once()
            before50, _, before99 = percentiles(result["before"])
            during50, _, during99 = percentiles(result["during"])
            yield [str(run), f"{before50:.2f} / {before99:.2f}",
                   f"{during50:.2f} / {during99:.2f} ({len(result['during'])})", f"{result['all_in'] * 1000:.0f}"]
    print_table(f"A class of {CLASS_SIZE} posts a verified run each (about 4.5 s of play) at the same moment; "
                "one viewer reads the top 10 back to back before and meanwhile:",
                ["run", "top 10 before: p50 / p99 ms", "top 10 during: p50 / p99 ms (requests)",
                 "all 30 verified in ms"], rows())


def report_memory(repeat):
    def rows():
        for run in range(1, repeat + 1):
            result = memory_with_runs()
            yield [str(run), f"{result['players']:,}", f"{result['runs_mib']:.0f} MiB", f"{result['rss']:.1f} MiB",
                   f"{result['restart_s']:.2f} s"]
    print_table("Memory with a verified run kept for every player (ticket, runs.jsonl line, run id on the score):",
                ["run", "players", "runs.jsonl on disk", "resident memory", "restart to first answer"], rows())


def report_console(repeat):
    def rows():
        for run in range(1, repeat + 1):
            result = top10_while_console_refreshes()
            for label, top10, refreshes, _ in result["phases"]:
                p50, p90, p99 = percentiles(top10)
                console = "-"
                if refreshes:
                    console = f"{len(refreshes):,} ({percentiles(refreshes)[0]:.1f})"
                yield [str(run), label, f"{len(top10):,}", f"{p50:.2f}", f"{p90:.2f}", f"{p99:.2f}", console,
                       f"{result['rss']:.0f} MiB", f"{result['built_s']:.1f} s"]
    print_table(f"The teacher's console on a full board ({CONSOLE_PLAYERS:,} players): a child's top 10 "
                f"(GET {TOP10}, {VIEWER_PAUSE_S * 1000:.0f} ms between requests) alone, while the console "
                f"refreshes GET /admin/players back to back, and while a class posts a score every "
                f"{CLASS_POST_S * 1000:.0f} ms too; {CONSOLE_S} s each:",
                ["run", "while", "top 10 requests", "p50 ms", "p90 ms", "p99 ms", "console refreshes (p50 ms)",
                 "resident memory at the end", "board written in"], rows(), left=(1,))


def report_reposts(repeat):
    def rows():
        for run in range(1, repeat + 1):
            result = top10_while_a_device_reposts()
            for label, top10, answers, cpu in result["phases"]:
                p50, p90, p99 = percentiles(top10)
                posted = "-" if answers is None else ", ".join(
                    f"{count:,} × {status}" for status, count in sorted(answers.items()))
                yield [str(run), label, f"{len(top10):,}", f"{p50:.2f}", f"{p90:.2f}", f"{p99:.2f}", posted,
                       "-" if cpu is None else f"{cpu:.1f}"]
    print_table(f"A child's top 10 (GET {TOP10}) alone for {QUIET_S} s, then for {ATTACK_S} s each while one "
                f"device reposts a refused {REPOST_MINUTES}-minute run (a bot's, with a wrong score) on tickets "
                "taken an hour before, as fast as it can (client limits off: no post-every-6-s limit holds it):",
                ["run", "while", "top 10 requests", "p50 ms", "p90 ms", "p99 ms", "reposts answered",
                 "server CPU s"], rows(), left=(1, 6))


def report_tickets(repeat):
    def rows():
        for run in range(1, repeat + 1):
            result = tickets_after_a_flood()
            flood = ", ".join(f"{count:,} × {status}" for status, count in sorted(result["statuses"].items()))
            yield [str(run), flood, f"{result['flood_s']:.0f}", f"{result['new_device']} of {NEW_DEVICE_TICKETS}",
                   str(result["kept"]), f"{result['after_restart']} of {NEW_DEVICE_TICKETS}",
                   f"{result['rss']:.0f} MiB"]
    print_table(f"Run tickets after a flood: {FLOOD_ADDRESSES:,} addresses take {FLOOD_TICKETS} tickets each (their "
                f"own limit) from {FLOOD_THREADS} connections at a time; then a new device asks for "
                f"{NEW_DEVICE_TICKETS} and posts a run on the first; then the same after a restart:",
                ["run", "flood answers", "flood s", "new device's tickets", "its run posted",
                 "after a restart", "resident memory after the flood"], rows(), left=(1,))


def report_table(player_counts, duration, repeat):
    use_wrk = shutil.which("wrk") is not None
    summary = []

    def rows():
        for _ in range(repeat):
            for players in player_counts:
                results, rss, restart_s = measure(players, int(duration) if use_wrk else duration, use_wrk)
                for label, rate, p50, p99 in results:
                    yield [f"{players:,}", label, f"{rate:,.0f}", f"{p50:.2f}", f"{p99:.2f}"]
                summary.append([f"{players:,}", f"{rss:.1f} MiB", f"{restart_s:.2f} s"])
    print_table(f"load generator: {'wrk -t1 -c8' if use_wrk else 'Python threads (8 connections); install wrk'}, "
                f"{duration:g} s per row, fsync on every acknowledged write; {os.cpu_count()} cores",
                ["players", "request", "requests/s", "p50 ms", "p99 ms"], rows(), left=(1,))
    print("| players | resident memory after the run | restart to first answer |")
    print("|---:|---:|---:|")
    for row in summary:
        print("| " + " | ".join(row) + " |")
    print()


def event_latencies(pages=30, posters=30, seconds=15):
    """ms from each POST's 2xx until every open page has the event (0 when the event came first)."""
    with tempfile.TemporaryDirectory(prefix="dino-bench-") as data_dir:
        server = Proc(data_dir, data_dir)  # limits on: every poster and page is a device of its own
        server.wait_ready(timeout=60)
        arrivals = [[] for _ in range(pages)]

        def listen(page):
            sock = socket.create_connection(("127.0.0.1", server.port), source_address=(f"127.0.3.{page + 1}", 0))
            sock.settimeout(seconds + 5)
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(OSError):
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    if b"event: scores" in chunk:
                        arrivals[page].append(time.monotonic())
        for page in range(pages):
            threading.Thread(target=listen, args=(page,), daemon=True).start()
        time.sleep(1)
        posts, stop = [], time.monotonic() + seconds

        def post(child):
            score = 0
            while time.monotonic() < stop:
                sent = time.monotonic()
                server.call("POST", f"/score/kid{child}", {"score": score}, source=f"127.0.4.{child + 1}")
                posts.append((sent, time.monotonic()))
                score += 1
                time.sleep(6.2)  # a game, then the next post: within the per-device score limit
        threads = [threading.Thread(target=post, args=(child,)) for child in range(posters)]
        for thread in threads:
            thread.start()
            time.sleep(0.2)
        for thread in threads:
            thread.join()
        time.sleep(0.5)
        server.stop()
    latencies = []
    for sent, acked in posts:
        for page_arrivals in arrivals:
            later = [at for at in page_arrivals if at >= sent]
            if later:
                latencies.append(max(0.0, min(later) - acked) * 1000)
    return sorted(latencies)


def report_events(repeat):
    """Live updates: 30 devices post a score every 6 s while 30 pages listen on /events."""
    def rows():
        for run in range(1, repeat + 1):
            lat = event_latencies()
            pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
            yield [str(run), f"{len(lat):,}", f"{pick(0.5):.1f}", f"{pick(0.9):.1f}", f"{pick(0.99):.1f}",
                   f"{lat[-1]:.1f}"]
    print_table("Live updates, 30 posting devices and 30 open pages: ms from a POST's 2xx to the event on each page",
                ["run", "deliveries", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows())


# Each measurement but the table, by name, in the order they run: report(repeat).
MEASURED_BY = {"attack": lambda repeat: report_attack(100_000, repeat), "verify": report_verify,
               "burst": report_burst, "class": report_class, "memory": report_memory, "events": report_events,
               "console": report_console, "reposts": report_reposts, "tickets": report_tickets,
               "pages": bench_live.report_pages, "burst300": bench_live.report_burst300,
               "race": bench_live.report_race, "race-pages": bench_live.report_race_pages}
MEASUREMENTS = ("table", *MEASURED_BY)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", default="100,1000,100000",
                        help="comma-separated player counts for the table (default 100,1000,100000)")
    parser.add_argument("--duration", type=float, default=4, help="seconds per table row (default 4)")
    parser.add_argument("--only", default=",".join(MEASUREMENTS),
                        help=f"comma-separated measurements to run, of {', '.join(MEASUREMENTS)} (default all)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each measurement this many times, on a machine shared with others (default 1)")
    args = parser.parse_args(argv)
    chosen = args.only.split(",")
    unknown = set(chosen) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement {', '.join(sorted(unknown))}; choose from {', '.join(MEASUREMENTS)}")
    if "table" in chosen:
        report_table([int(part) for part in args.players.split(",")], args.duration, args.repeat)
    for name, report in MEASURED_BY.items():
        if name in chosen:
            report(args.repeat)
    return 0

if __name__ == "__main__":
    sys.exit(main())
