"""Live pages and the class race, measured against server.py in a subprocess (see tools/bench.py).

    .venv/bin/python tools/bench.py --only pages,burst300,race

pages     1,000 simulated pages that behave as game/dino.html does: a live
          stream (/events), a keep-alive connection, a run ticket and a
          verified post per game, a few seconds of play and then some time
          looking at the board.  Every page is a device of its own (its own
          loopback address), with the per-device limits on.  Meanwhile a
          probe posts a new best score every second and each page notes
          when its stream shows it, and a child asks for the top 10 ten
          times a second.
burst300  300 pages post a verified run at the same instant.
race      30 bots race as pages do (a batch of key changes every 250 ms),
          while the board's stream (?inputs=1) relays them; the server's
          CPU over the race, and how long a batch takes from its POST to
          the board's stream.
"""

import asyncio
import collections
import contextlib
import json
import multiprocessing
import os
import random
import re
import resource
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import server as dino  # noqa: E402
from conftest import Proc, call  # noqa: E402

PAGES = 1000
PAGES_RAMP_S = 10           # pages open over this many seconds, as a school's classes arrive
PAGES_MEASURE_S = 60        # then this long is measured
LOOK_AT_BOARD_S = (10, 40)  # between two games a page idles this long (reading the board, choosing a name)
PROBE_EVERY_S = 1.0
TOP10_EVERY_S = 0.1
BURST_PAGES = 300
RACERS = 30
RACE_S = 40
BATCH_S = 0.25
PROBE_NAME = "Probe"
PROBE_SCORE = re.compile(rb'"name":"Probe","best":(\d+)')


def page_address(i):
    """Page ``i``'s own loopback address: 127.1.x.y, a device of its own."""
    return f"127.1.{i // 250}.{i % 250 + 1}"


def teacher_headers(data_dir):
    key = json.loads(open(os.path.join(data_dir, "teacher.json"), encoding="utf-8").read())["key"]
    return {"Authorization": "Bearer " + key}


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pick(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class Http:
    """One keep-alive HTTP/1.1 connection from a given address, reopened when the server closed it."""

    def __init__(self, port, source):
        self.port, self.source = port, source
        self.reader = self.writer = None

    async def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(
                        "127.0.0.1", self.port, local_addr=(self.source, 0))
                return await self._exchange(method, path, body, headers)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, method, path, body, headers):
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        self.writer.write(head.encode() + b"\r\n" + data)
        await self.writer.drain()
        status_line = await self.reader.readuntil(b"\r\n")
        length, close = 0, False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        payload = await self.reader.readexactly(length)
        if close:
            self.close()
        return int(status_line.split()[1]), payload

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Stream:
    """A page's /events stream: notes when each probe score first shows on it."""

    def __init__(self, port, source, query=""):
        self.port, self.source, self.query = port, source, query
        self.accepted = None
        self.seen = {}        # probe score -> when this page saw it
        self.events = []      # (kind, data) of other events, when ``keep`` is set
        self.keep = False
        self.drops = 0        # times the server closed it

    async def run(self, stop):
        """Keep the stream open as a browser does: a dropped one is opened again after the retry delay."""
        while not stop.is_set():
            await self.open_once(stop)
            if stop.is_set() or self.accepted is False:
                return
            self.drops += 1
            await asyncio.sleep(dino.EVENTS_RETRY_MS / 1000)

    async def open_once(self, stop):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.source, 0))
        except OSError:
            self.accepted = False
            return
        writer.write(f"GET /events{self.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        accepted = b" 200 " in head.split(b"\r\n")[0]
        self.accepted = accepted if self.accepted is None else self.accepted and accepted
        if not accepted:
            writer.close()
            return
        buffer = b""
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while not stop.is_set():
                chunk = await reader.read(65536)
                if not chunk:
                    break
                now = time.perf_counter()
                buffer += chunk
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    self.on_block(block, now)
        writer.close()

    def on_block(self, block, now):
        if block.startswith(b"event: scores"):
            found = PROBE_SCORE.search(block)
            if found:
                self.seen.setdefault(int(found.group(1)), now)
        elif self.keep and block.startswith(b"event: "):
            kind, _, data = block.partition(b"\ndata: ")
            self.events.append((kind[7:].decode(), json.loads(data), now))


def quick_crash(config, seed, width=600):
    """A run that presses nothing: (inputs, score, ticks) of its crash at the first obstacle."""
    result = dino.replay_run(config, seed, width, [], 60 * 60)
    return [], result["score"], result["ticks"]


async def play_games(port, i, config, stop, counts):
    """A page's games: a ticket, the run's length of play, a verified post, then a look at the board."""
    http = Http(port, page_address(i))
    key = {"Player-Key": f"bench-page-{i:05d}-0123456789abcdef"}
    await asyncio.sleep(random.uniform(0, LOOK_AT_BOARD_S[1]))
    while not stop.is_set():
        status, body = await http.request("POST", "/runs", None, key)
        if status != 201:
            counts["ticket " + str(status)] += 1
            await asyncio.sleep(5)
            continue
        ticket = json.loads(body)
        inputs, score, ticks = quick_crash(config, ticket["seed"])
        await asyncio.sleep(ticks / 60 + 1.2)    # the run is played; issued_at is a whole second
        post = {"score": score, "run": ticket["run"], "width": 600, "inputs": inputs}
        status, body = await http.request("POST", f"/score/kid{i}", post, key)
        counts["post " + str(status)] += 1
        if status >= 300:
            counts["refused: " + json.loads(body).get("error", "")[:60]] += 1
        await asyncio.sleep(random.uniform(*LOOK_AT_BOARD_S))


async def probe(port, stop, sent):
    """A new best score every second, from ten addresses in turn (each well within its post rate)."""
    clients = [Http(port, f"127.2.0.{k + 1}") for k in range(10)]
    score = 9_000_000
    while not stop.is_set():
        score += 1
        began = time.perf_counter()
        status, _ = await clients[score % len(clients)].request("POST", f"/score/{PROBE_NAME}", {"score": score})
        if status == 200:
            sent[score] = began
        await asyncio.sleep(PROBE_EVERY_S)


async def top10(port, stop, latencies):
    http = Http(port, "127.2.1.1")
    while not stop.is_set():
        began = time.perf_counter()
        status, _ = await http.request("GET", "/players?limit=10&ties=1")
        latencies.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(TOP10_EVERY_S)


async def sample_server(pid, stop, samples):
    while not stop.is_set():
        samples.append(rss_mib(pid))
        await asyncio.sleep(1)


PAGE_PROCESSES = 3          # pages are simulated by this many processes, so the client is not what is measured


async def some_pages(port, first, count, ramp_s, run_s):
    """Pages ``first`` .. ``first + count - 1`` for ``run_s`` seconds: streams, games, what they saw."""
    config = dino.read_sim_config()
    stop, counts = asyncio.Event(), collections.Counter()
    streams = [Stream(port, page_address(i)) for i in range(first, first + count)]
    tasks = []
    for i, stream in zip(range(first, first + count), streams):
        tasks.append(asyncio.ensure_future(stream.run(stop)))
        tasks.append(asyncio.ensure_future(play_games(port, i, config, stop, counts)))
        await asyncio.sleep(ramp_s / count)
    await asyncio.sleep(run_s)
    stop.set()
    await asyncio.sleep(1.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counts["stream drops"] = sum(s.drops for s in streams)
    return {"accepted": [s.accepted for s in streams], "seen": [s.seen for s in streams], "counts": dict(counts),
            "cpu s": usage.ru_utime + usage.ru_stime}


def shown_after(page_seen, score):
    """When a page first showed ``score`` or a later probe score (two in one coalesced event show the later)."""
    return min((at for shown, at in page_seen.items() if shown >= score), default=float("inf"))


def pages_process(args):
    return asyncio.run(some_pages(*args))


async def measure_while_pages(port, pid, stop, sent, lat, rss):
    tasks = [asyncio.ensure_future(sample_server(pid, stop, rss)), asyncio.ensure_future(probe(port, stop, sent)),
             asyncio.ensure_future(top10(port, stop, lat))]
    while not stop.is_set():
        await asyncio.sleep(0.1)
    await asyncio.gather(*tasks, return_exceptions=True)


def thousand_pages(port, pid, data_dir, pages=PAGES):
    """Run the pages in PAGE_PROCESSES processes while this one probes; the figures of the run."""
    teacher = teacher_headers(data_dir)
    # Plain posts count on the board (the probe's), and a school arriving is let in past the class rate.
    asyncio.run(Http(port, "127.2.2.1").request("PATCH", "/admin/settings", {"count_unverified": True}, teacher))
    asyncio.run(Http(port, "127.2.2.1").request("POST", "/admin/names/let-in", {}, teacher))
    share = pages // PAGE_PROCESSES
    jobs = [(port, k * share, share if k < PAGE_PROCESSES - 1 else pages - k * share, PAGES_RAMP_S,
             PAGES_MEASURE_S + 2) for k in range(PAGE_PROCESSES)]
    sent, lat, rss = {}, [], []
    with multiprocessing.Pool(PAGE_PROCESSES) as pool:
        results = pool.map_async(pages_process, jobs)
        time.sleep(PAGES_RAMP_S + 2)
        cpu_before, began = cpu_s(pid), time.perf_counter()

        async def measure():
            stop = asyncio.Event()
            asyncio.get_event_loop().call_later(PAGES_MEASURE_S, stop.set)
            await measure_while_pages(port, pid, stop, sent, lat, rss)
        asyncio.run(measure())
        cpu = (cpu_s(pid) - cpu_before) / (time.perf_counter() - began) * 100
        parts = results.get()
    accepted = [a for part in parts for a in part["accepted"]]
    seen = [page for part in parts for page in part["seen"]]
    counts = collections.Counter()
    for part in parts:
        counts.update(part["counts"])
    last_useful = max(sent.values(), default=0) - 2.5
    reach = [(shown_after(page, score) - at) * 1000 for score, at in sent.items() if at <= last_useful
             for page, ok in zip(seen, accepted) if ok]
    posts = sum(n for kind, n in counts.items() if kind.startswith("post "))
    saved = sum(n for kind, n in counts.items() if kind.startswith("post 2"))
    return {"pages": pages, "streams accepted": sum(1 for a in accepted if a), "posts": posts,
            "saved": saved, "refusals": {k: n for k, n in counts.items() if not k.startswith("post 2")},
            "probe scores": len(sent), "reach p50": pick(reach, 0.5), "reach p99": pick(reach, 0.99),
            "reach max": max(reach) if reach else float("nan"), "missed": sum(1 for r in reach if r == float("inf")),
            "top10 p50": pick(lat, 0.5), "top10 p99": pick(lat, 0.99), "rss max": max(rss), "cpu %": cpu,
            "client cpu s": [round(part["cpu s"], 1) for part in parts]}


def report_pages(repeat):
    for run in range(1, repeat + 1):
        with tempfile.TemporaryDirectory(prefix="dino-bench-") as data_dir:
            server = Proc(data_dir, data_dir)   # limits on: every page is a device of its own
            server.wait_ready(timeout=60)
            try:
                result = thousand_pages(server.port, server.p.pid, data_dir)
            finally:
                server.stop()
        print(f"pages run {run}: " + json.dumps(result))
        print(f"| {result['pages']:,} pages | {result['streams accepted']:,} streams accepted | "
              f"{result['saved']:,} of {result['posts']:,} posts saved | event reach p50 {result['reach p50']:.0f} ms, "
              f"p99 {result['reach p99']:.0f} ms, max {result['reach max']:.0f} ms ({result['missed']} missed) | "
              f"top 10 p50 {result['top10 p50']:.1f} ms, p99 {result['top10 p99']:.1f} ms | "
              f"RSS max {result['rss max']:.0f} MiB | server CPU {result['cpu %']:.0f} % of a core |")


async def burst(port, pages=BURST_PAGES):
    """``pages`` pages each take a ticket, play, then all post their verified runs at one instant."""
    config = dino.read_sim_config()
    clients = [Http(port, page_address(i)) for i in range(pages)]
    keys = [{"Player-Key": f"burst-page-{i:05d}-0123456789abcdef"} for i in range(pages)]
    tickets = await asyncio.gather(*(c.request("POST", "/runs", None, k) for c, k in zip(clients, keys)))
    runs = [json.loads(body) for _, body in tickets]
    played = [quick_crash(config, run["seed"]) for run in runs]
    await asyncio.sleep(max(ticks for _, _, ticks in played) / 60 + 1.5)
    began = time.perf_counter()
    answers = await asyncio.gather(*(
        c.request("POST", f"/score/burst{i}", {"score": score, "run": run["run"], "width": 600, "inputs": inputs}, k)
        for i, (c, k, run, (inputs, score, _)) in enumerate(zip(clients, keys, runs, played))))
    took = time.perf_counter() - began
    statuses = {}
    for status, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    return statuses, took


def report_burst300(repeat):
    for run in range(1, repeat + 1):
        with tempfile.TemporaryDirectory(prefix="dino-bench-") as data_dir:
            server = Proc(data_dir, data_dir)
            server.wait_ready(timeout=60)
            try:
                http = Http(server.port, "127.2.2.1")
                asyncio.run(http.request("POST", "/admin/names/let-in", {}, teacher_headers(data_dir)))
                statuses, took = asyncio.run(burst(server.port))
            finally:
                server.stop()
        print(f"| run {run} | {BURST_PAGES} verified posts at once | answers {statuses} | all answered in {took:.2f} s |")


class BotRacer:
    """A racer as a page sends: a batch of key changes every 250 ms, from its own address and key."""

    def __init__(self, port, i, race, config, lead):
        self.http = Http(port, page_address(500 + i))
        self.key = {"Player-Key": f"bench-racer-{i:03d}-0123456789abcdef"}
        self.name, self.race, self.lead = f"Racer{i}", race, lead
        self.world = dino.SimWorld(dino.SimRules(config), race["seed"], race["width"])
        self.inputs, self.sent, self.seq, self.keys, self.jumped = [], 0, 0, (0, 0), 0
        self.posted = {}    # seq -> when its POST was sent
        self.tires_at = None  # a tick from which it presses nothing, so it crashes at the next obstacle

    def play_to(self, tick):
        world = self.world
        front = world.rules.trex["x"] + world.rules.trex["w"]
        while world.ticks < tick and not world.crashed:
            ahead = [o for o in world.obstacles if o.x + o.w > world.rules.trex["x"]]
            jump = duck = 0
            if world.jumping:
                jump = self.keys[0] if world.ticks - self.jumped < 6 else 0
            elif ahead and (self.tires_at is None or world.ticks < self.tires_at):
                nearest = ahead[0]
                distance = nearest.x - front
                if nearest.type["id"] != "ptero" or nearest.y >= 90:
                    jump = int(distance < self.lead * world.speed)
                elif nearest.y >= 60:
                    duck = int(distance < self.lead * 1.5 * world.speed)
            if jump and not world.jumping:
                self.jumped = world.ticks
            if (jump, duck) != self.keys:
                self.inputs.append([world.ticks, jump, duck])
                self.keys = (jump, duck)
            dino.sim_tick(world, bool(jump), bool(duck))

    async def race_loop(self, offset_ms, stop):
        starts = self.race["starts_at"] / 1000 - offset_ms / 1000
        await asyncio.sleep(max(0.0, starts - time.time()))
        while not stop.is_set() and not self.world.crashed:
            await asyncio.sleep(BATCH_S)
            self.play_to(int((time.time() - starts) * 60))
            batch = {"seq": self.seq, "tick": self.world.ticks, "inputs": self.inputs[self.sent:],
                     "crashed": self.world.crashed, "name": self.name}
            self.posted[self.seq] = time.perf_counter()
            status, _ = await self.http.request("POST", f"/races/{self.race['id']}/inputs", batch, self.key)
            if status == 200:
                self.seq += 1
                self.sent = len(self.inputs)
            elif status == 409:
                return   # the race is over (its time limit), as the page stops on a 409


async def race_of_thirty(port, pid, data_dir, keep=None):
    """30 bots race; ``keep`` (a dict) is given the race and the bots by name as soon as they exist."""
    teacher = teacher_headers(data_dir)
    admin = Http(port, "127.2.2.1")
    status, body = await admin.request("POST", "/admin/races", {"title": "Bench", "countdown_s": 5,
                                                                "time_limit_s": RACE_S}, teacher)
    race = json.loads(body)
    offset_ms = race["server_now"] - time.time() * 1000
    config = dino.read_sim_config()
    racers = [BotRacer(port, i, race, config, lead=random.Random(i).uniform(8, 16)) for i in range(RACERS)]
    if keep is not None:
        keep.update(race=race, racers={racer.name: racer for racer in racers})
    for racer in racers:
        status, _ = await racer.http.request("POST", f"/races/{race['id']}/join", {"name": racer.name}, racer.key)
        assert status == 200, status
    stop = asyncio.Event()
    board = Stream(port, "127.2.3.1", "?inputs=1")
    board.keep = True
    board_task = asyncio.ensure_future(board.run(stop))
    await asyncio.sleep(max(0.0, race["starts_at"] / 1000 - offset_ms / 1000 - time.time()))
    cpu_before, began = cpu_s(pid), time.perf_counter()
    await asyncio.gather(*(racer.race_loop(offset_ms, stop) for racer in racers))
    while True:
        status, body = await admin.request("GET", f"/races/{race['id']}")
        if json.loads(body)["state"] == "done" or time.perf_counter() - began > RACE_S + 30:
            break
        await asyncio.sleep(0.5)
    wall = time.perf_counter() - began
    cpu = (cpu_s(pid) - cpu_before) / wall * 100
    stop.set()
    board_task.cancel()
    await asyncio.gather(board_task, return_exceptions=True)
    by_name = {racer.name: racer for racer in racers}
    relay = [(at - by_name[data["name"]].posted[data["seq"]]) * 1000 for kind, data, at in board.events
             if kind == "race-inputs"]
    final = json.loads(body)
    return {"racers": RACERS, "race s": round(wall, 1), "end": final["end"], "server cpu %": cpu,
            "batches relayed": len(relay), "relay p50": pick(relay, 0.5), "relay p95": pick(relay, 0.95),
            "relay p99": pick(relay, 0.99)}


def report_race(repeat):
    for run in range(1, repeat + 1):
        with tempfile.TemporaryDirectory(prefix="dino-bench-") as data_dir:
            server = Proc(data_dir, data_dir)
            server.wait_ready(timeout=60)
            try:
                result = asyncio.run(race_of_thirty(server.port, server.p.pid, data_dir))
            finally:
                server.stop()
        print(f"race run {run}: " + json.dumps(result))


# -- the race with real pages: the start's spread and the ghosts' lag on the board --------------------

CLASS_PAGES = 30
GHOST_SAMPLE_S = 0.1


def open_class(browser, base, names):
    """One small game page per child, each a device of its own, its name confirmed."""
    pages = []
    for name in names:
        context = browser.new_context(viewport={"width": 480, "height": 320})
        page = context.new_page()
        page.goto(base + "/", wait_until="load")
        page.fill("#name", name)
        page.press("#name", "Enter")
        page.wait_for_function("() => document.querySelector('#stage').dataset.ticket === 'yes'")
        pages.append(page)
    return pages


def race_start_spread(browser, port, data_dir):
    """30 real game pages race: how far apart their first ticks were, on the server's clock (ms)."""
    base = f"http://127.0.0.1:{port}"
    pages = open_class(browser, base, [f"Kid{i}" for i in range(CLASS_PAGES)])
    race = call(port, "POST", "/admin/races", {"title": "Spread", "countdown_s": 8, "time_limit_s": 60},
                teacher_headers(data_dir)).json()
    deadline = time.time() + 40
    while time.time() < deadline:
        final = call(port, "GET", f"/races/{race['id']}").json()
        if final["state"] == "done":
            break
        time.sleep(0.5)
    started = [r["started_at"] for r in final["racers"] if r["started_at"] is not None]
    for page in pages:
        page.context.close()
    late = [at - race["starts_at"] for at in started]
    return {"pages": CLASS_PAGES, "joined": len(final["racers"]), "started": len(started),
            "spread ms": max(started) - min(started) if started else None,
            "latest after starts_at ms": max(late) if late else None, "earliest ms": min(late) if late else None}


def ghost_lag(browser, port, pid, data_dir):
    """30 bots race while the real board draws them: how far each ghost is behind its child (ms)."""
    page = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
    page.goto(f"http://127.0.0.1:{port}/board", wait_until="load")
    page.wait_for_function("() => document.querySelector('#live').dataset.live === 'on'")
    results, bots = {}, {}

    def run_bots():
        results["race"] = asyncio.run(race_of_thirty(port, pid, data_dir, keep=bots))
    thread = threading.Thread(target=run_bots)
    thread.start()
    lags = []
    while thread.is_alive():
        sample = page.evaluate("() => ({now: Date.now(), race: window.DinoBoardRace || null})")
        board = sample["race"]
        race = bots.get("race")
        if board and race and board["state"] == "running":
            elapsed_ticks = (sample["now"] - race["starts_at"]) * 60 / 1000
            for ghost in board["ghosts"]:
                bot = bots["racers"].get(ghost["name"])
                if bot is None or bot.world.crashed or not ghost["alive"] or elapsed_ticks < 60:
                    continue
                lags.append((elapsed_ticks - ghost["tick"]) * 1000 / 60)
        time.sleep(GHOST_SAMPLE_S)
    thread.join()
    page.context.close()
    return {"samples": len(lags), "ghost lag p50 ms": pick(lags, 0.5), "p95 ms": pick(lags, 0.95),
            "max ms": max(lags) if lags else None, **results["race"]}


def report_race_pages(repeat):
    from conftest import CHROMIUM, LAUNCH_ARGS
    from playwright.sync_api import sync_playwright
    for run in range(1, repeat + 1):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            with tempfile.TemporaryDirectory(prefix="dino-bench-") as data_dir:
                # 30 pages of one browser share an address; a class's phones have one each
                server = Proc(data_dir, data_dir, "--client-limits", "off")
                server.wait_ready(timeout=60)
                try:
                    spread = race_start_spread(browser, server.port, data_dir)
                finally:
                    server.stop()
            print(f"race start run {run}: " + json.dumps(spread))
            print(f"| {spread['pages']} game pages | first ticks within {spread['spread ms']} ms of each other | "
                  f"{spread['earliest ms']} to {spread['latest after starts_at ms']} ms after starts_at |")
            with tempfile.TemporaryDirectory(prefix="dino-bench-") as data_dir:
                server = Proc(data_dir, data_dir)
                server.wait_ready(timeout=60)
                try:
                    lag = ghost_lag(browser, server.port, server.p.pid, data_dir)
                finally:
                    server.stop()
            print(f"ghost lag run {run}: " + json.dumps(lag))
            print(f"| {lag['racers']} racers, the real board | ghost behind its child p50 {lag['ghost lag p50 ms']:.0f} ms, "
                  f"p95 {lag['p95 ms']:.0f} ms | server CPU {lag['server cpu %']:.1f} % of a core | "
                  f"batch to board stream p95 {lag['relay p95']:.1f} ms |")
            browser.close()
