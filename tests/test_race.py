"""The class race, at the HTTP level: the teacher starts it, pages join and send their inputs, the server judges.

Most tests run the server in this process with its clock in the test's
hand (``app.clock``), so a countdown, a silent racer or a late batch is a
step of the clock, not a wait.  Racers are bots that play the server's own
simulation tick by tick and send their key changes as a page does.
"""

import csv
import io
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, Proc, call, eventually

sys.path.insert(0, str(ROOT))
import server as dino  # noqa: E402  (the module under test, from the project root)

T0 = 1_800_000_000.0   # the test clock's start, in seconds


class Clock:
    """The server's clock, moved by the test."""

    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def ms(self):
        return int(self.now * 1000)


class Server:
    """make_server in this process, its clock in the test's hand."""

    def __init__(self, data_dir):
        self.clock = Clock()
        self.srv = dino.make_server(data_dir=str(data_dir))
        self.app = self.srv.app
        self.app.clock = self.clock
        self.app.limits.clock = self.clock   # per-device rates count the test's seconds too
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        self.teacher = {"Authorization": "Bearer " + self.app.teacher.key}

    def call(self, method, path, body=None, headers=None, source=None):
        return call(self.port, method, path, body, headers, 10, source)

    def close(self):
        self.srv.shutdown()
        self.srv.close()


@pytest.fixture
def race_server(tmp_path):
    running = Server(tmp_path / "data")
    yield running
    running.close()


class Racer:
    """A page in the race: its Player-Key, its address, and a bot playing the race's world."""

    count = 0

    def __init__(self, server, name, reach=12, tires_at=None):
        Racer.count += 1
        self.server, self.name, self.reach = server, name, reach
        # the tick from which it presses nothing more, so it crashes at the next obstacle: 5 to 12 s of play
        self.tires_at = tires_at if tires_at is not None else 300 + 60 * (reach % 8)
        self.key = {"Player-Key": f"racer-{Racer.count:04d}-secret-0123456789"}
        self.source = f"127.0.5.{Racer.count % 250 + 1}"
        self.world = None
        self.inputs, self.sent, self.seq, self.held, self.jumped_at = [], 0, 0, (0, 0), 0

    def join(self, race):
        reply = self.server.call("POST", f"/races/{race['id']}/join", {"name": self.name}, self.key, self.source)
        if reply.status == 200:
            self.race = race
            self.world = dino.SimWorld(dino.SimRules(self.server.app.sim_config), race["seed"], race["width"])
        return reply

    def play(self, ticks):
        """Play ``ticks`` more ticks (or to the crash): jump a ground obstacle ``reach`` ticks ahead, duck a
        middle pterodactyl, let go of jump after a few ticks.  A bigger reach jumps earlier."""
        world, end = self.world, self.world.ticks + ticks
        back, front = world.rules.trex["x"], world.rules.trex["x"] + world.rules.trex["w"]
        while world.ticks < end and not world.crashed:
            ahead = [o for o in world.obstacles if o.x + o.w > back]
            jump = duck = 0
            if world.jumping:
                jump = self.held[0] if world.ticks - self.jumped_at < 6 else 0
            elif ahead and world.ticks < self.tires_at:
                nearest = ahead[0]
                gap = nearest.x - front
                if nearest.type["id"] != "ptero" or nearest.y >= 90:
                    jump = int(gap < self.reach * world.speed)
                elif nearest.y >= 60:
                    duck = int(gap < self.reach * 1.5 * world.speed)
            if jump and not world.jumping:
                self.jumped_at = world.ticks
            if (jump, duck) != self.held:
                self.inputs.append([world.ticks, jump, duck])
                self.held = (jump, duck)
            dino.sim_tick(world, jump == 1, duck == 1)

    def hold(self, keys, ticks):
        """Hold ``keys`` (jump, duck) for ``ticks`` ticks, as a child pressing a key would."""
        if keys != self.held:
            self.inputs.append([self.world.ticks, *keys])
            self.held = keys
        for _ in range(ticks):
            dino.sim_tick(self.world, keys[0] == 1, keys[1] == 1)

    def send(self, **changes):
        batch = {"seq": self.seq, "tick": self.world.ticks, "inputs": self.inputs[self.sent:],
                 "crashed": self.world.crashed, "name": self.name, **changes}
        reply = self.server.call("POST", f"/races/{self.race['id']}/inputs", batch, self.key, self.source)
        if reply.status == 200:
            self.seq += 1
            self.sent = len(self.inputs)
        return reply


def start_race(server, **settings):
    reply = server.call("POST", "/admin/races", settings, server.teacher)
    assert reply.status == 201, reply
    return reply.json()


def run_clock_to(server, race, seconds):
    """Move the server's clock to ``seconds`` after the race's start."""
    server.clock.now = race["starts_at"] / 1000 + seconds


def error_of(reply, status):
    assert reply.status == status, reply
    return reply.json()["error"]


def race_now(server, race_id="current"):
    reply = server.call("GET", f"/races/{race_id}")
    assert reply.status == 200, reply
    return reply.json()


def crash_all(server, race, racers, step_s=0.25):
    """Play every racer to its crash in 250 ms batches, the server's clock following the play."""
    elapsed = max(0.0, server.clock.now - race["starts_at"] / 1000)
    while any(not racer.world.crashed for racer in racers):
        elapsed += step_s
        run_clock_to(server, race, elapsed)
        for racer in racers:
            if not racer.world.crashed:
                racer.play(int(elapsed * 60) - racer.world.ticks)
                assert racer.send().status == 200
    return elapsed


# ----------------------------------------------------------------- starting

def test_a_race_counts_down_then_everyone_plays_the_same_world(race_server):
    race = start_race(race_server, title="Friday race", countdown_s=5)
    assert race["state"] == "countdown" and race["title"] == "Friday race"
    assert race["starts_at"] - race["created_at"] == 5000
    assert race["width"] == race_server.app.sim_config["world"]["width"]
    assert race_now(race_server)["seed"] == race["seed"]
    assert Racer(race_server, "Ada").join(race).status == 200   # a race nobody joined ends at its start
    run_clock_to(race_server, race, 0)
    assert race_now(race_server)["state"] == "running"


def test_only_the_teacher_starts_a_race_and_one_at_a_time(race_server):
    assert error_of(race_server.call("POST", "/admin/races", {}), 401).startswith("this needs the teacher key")
    start_race(race_server)
    assert error_of(race_server.call("POST", "/admin/races", {}, race_server.teacher), 409) == (
        "a race is on already: wait for its end, or stop it first")


@pytest.mark.parametrize("settings", [{"countdown_s": 2}, {"countdown_s": "5"}, {"time_limit_s": 99999},
                                      {"title": "x" * 81}, {"countdown_s": True}])
def test_bad_race_settings_get_400(race_server, settings):
    assert error_of(race_server.call("POST", "/admin/races", settings, race_server.teacher), 400)
    assert race_server.call("GET", "/races/current").status == 404


def test_the_teacher_stops_a_race(race_server):
    race = start_race(race_server)
    stopped = race_server.call("POST", "/admin/races/current/stop", None, race_server.teacher)
    assert stopped.status == 200 and stopped.json()["end"] == "stopped" and stopped.json()["state"] == "done"
    assert error_of(race_server.call("POST", "/admin/races/current/stop", None, race_server.teacher), 409)
    assert start_race(race_server)["id"] == race["id"] + 1


# ----------------------------------------------------------------- joining

def test_racers_join_in_the_countdown_under_their_own_name(race_server):
    race = start_race(race_server)
    ada = Racer(race_server, "Ada")
    assert ada.join(race).status == 200
    assert ada.join(race).status == 200            # a page joining twice is in once
    assert [r["name"] for r in race_now(race_server)["racers"]] == ["Ada"]
    thief = Racer(race_server, "ada")
    assert "already someone's name on another device" in error_of(thief.join(race), 409)
    keyless = race_server.call("POST", f"/races/{race['id']}/join", {"name": "Bob"}, None, "127.0.5.200")
    assert error_of(keyless, 400).startswith("racing needs the game page's Player-Key")


def test_a_name_claimed_on_the_board_races_only_from_its_device(race_server):
    owner = {"Player-Key": "claims-ben-0123456789abcdef"}
    assert race_server.call("POST", "/score/Ben", {"score": 5}, owner, "127.0.5.201").status == 200
    race = start_race(race_server)
    assert "already someone's name" in error_of(Racer(race_server, "BEN").join(race), 409)
    reply = race_server.call("POST", f"/races/{race['id']}/join", {"name": "ben"}, owner, "127.0.5.201")
    assert reply.status == 200 and [r["name"] for r in reply.json()["racers"]] == ["Ben"]


def test_a_late_page_watches_and_joins_the_next_race(race_server):
    race = start_race(race_server)
    assert Racer(race_server, "Ada").join(race).status == 200   # a race nobody joined ends at its start
    run_clock_to(race_server, race, 1)
    assert error_of(Racer(race_server, "Late").join(race), 409) == (
        "the race has started: watch it on the board, and join the next one")


def test_many_devices_joining_under_one_name_at_once_let_one_in(race_server):
    race = start_race(race_server)
    racers = [Racer(race_server, "Noor") for _ in range(20)]
    with ThreadPoolExecutor(20) as pool:
        statuses = sorted(reply.status for reply in pool.map(lambda racer: racer.join(race), racers))
    assert statuses == [200] + [409] * 19
    assert [r["name"] for r in race_now(race_server)["racers"]] == ["Noor"]


# ----------------------------------------------------------------- judging

def test_the_result_is_the_servers_replay_of_the_inputs(race_server):
    race = start_race(race_server)
    racers = [Racer(race_server, name, reach) for name, reach in (("Ada", 14), ("Bo", 10), ("Cy", 7))]
    for racer in racers:
        assert racer.join(race).status == 200
    crash_all(race_server, race, racers)
    final = eventually(lambda: (lambda r: r if r["state"] == "done" else None)(race_now(race_server)), 10,
                       "the race to end once every racer crashed")
    assert final["end"] == "finished"
    runs = race_server.call("GET", f"/races/{race['id']}/runs").json()
    assert len(runs["racers"]) == 3
    for run in runs["racers"]:
        replay = dino.replay_run(race_server.app.sim_config, runs["seed"], runs["width"], run["inputs"], 10 ** 6)
        assert replay["crashed"] and replay["crash_tick"] == run["crashed_at"]
        assert replay["score"] == run["score"]
    by_name = {racer.name: racer for racer in racers}
    assert [r["score"] for r in final["racers"]] == sorted((dino.sim_score(r.world) for r in racers), reverse=True)
    assert [r["place"] for r in final["racers"]] == [1, 2, 3]
    assert all(r["status"] == "crashed" and r["verified"] for r in final["racers"])
    assert {r["name"]: r["score"] for r in final["racers"]} == {n: dino.sim_score(r.world) for n, r in by_name.items()}


def test_a_racers_run_joins_the_board_as_a_verified_run(race_server):
    race = start_race(race_server)
    ada = Racer(race_server, "Ada")
    ada.join(race)
    crash_all(race_server, race, [ada])
    eventually(lambda: race_now(race_server)["racers"][0]["run"], 10, "the run to be kept")
    row = race_server.call("GET", "/players").json()[0]
    assert row["name"] == "Ada" and row["verified"] and row["best"] == dino.sim_score(ada.world)
    watched = race_server.call("GET", f"/runs/{row['run']}").json()
    assert (watched["seed"], watched["inputs"], watched["score"]) == (race["seed"], ada.inputs, row["best"])


def test_the_standings_move_as_batches_arrive(race_server):
    race = start_race(race_server)
    ada, bo = Racer(race_server, "Ada"), Racer(race_server, "Bo")
    ada.join(race), bo.join(race)
    run_clock_to(race_server, race, 2)
    ada.play(120)
    bo.play(60)
    answer = ada.send().json()
    assert answer == {"tick": 120, "distance": int(ada.world.distance), "score": dino.sim_score(ada.world),
                      "alive": True, "late": False, "place": 1}
    assert bo.send().json()["place"] == 2
    assert [(r["name"], r["tick"], r["status"]) for r in race_now(race_server)["racers"]] == [
        ("Ada", 120, "racing"), ("Bo", 60, "racing")]


# ----------------------------------------------------------------- the rules

def test_inputs_that_break_a_rule_get_409_and_store_nothing(race_server):
    race = start_race(race_server)
    ada, bo = Racer(race_server, "Ada"), Racer(race_server, "Bo")
    ada.join(race), bo.join(race)
    stranger = Racer(race_server, "Zed")
    stranger.race, stranger.world = race, dino.SimWorld(dino.SimRules(race_server.app.sim_config), 1, 600)
    assert error_of(ada.send(), 409) == "the race has not started yet"
    run_clock_to(race_server, race, 3)
    ada.play(120)
    assert ada.send().status == 200
    before = race_now(race_server)
    ada.play(30)
    assert "was expected, not 5" in error_of(ada.send(seq=5), 409)
    assert error_of(ada.send(tick=100), 409).startswith("ticks out of order")
    assert "races from another device" in error_of(bo.send(name="Ada"), 409)
    assert error_of(stranger.send(name=None), 409) == "this page is not in this race: it joins during the countdown"
    assert error_of(ada.send(tick=4 * 60 + 61), 409).startswith("the batch is ahead of the race clock")
    after = race_now(race_server)
    assert [(r["name"], r["tick"], r["distance"]) for r in after["racers"]] == [
        (r["name"], r["tick"], r["distance"]) for r in before["racers"]]
    race_server.call("POST", "/admin/races/current/stop", None, race_server.teacher)
    assert error_of(ada.send(), 409) == "this race is over: its results are kept"


@pytest.mark.parametrize("batch", [{"seq": -1}, {"tick": "9"}, {"inputs": [[1, 2, 0]]}, {"inputs": [[5, 1, 0], [5, 0, 0]]},
                                   {"inputs": "jump"}, {"crashed": "yes"}, {"first_tick_at": "now"}])
def test_malformed_batches_get_400(race_server, batch):
    race = start_race(race_server)
    ada = Racer(race_server, "Ada")
    ada.join(race)
    run_clock_to(race_server, race, 1)
    assert error_of(ada.send(**batch), 400)


def test_inputs_back_after_a_wifi_drop_count_marked_late_within_the_slack(race_server):
    race = start_race(race_server)
    ada = Racer(race_server, "Ada", reach=14)
    ada.join(race)
    run_clock_to(race_server, race, 1)
    ada.play(60)
    assert ada.send().json()["late"] is False
    run_clock_to(race_server, race, 4)             # three seconds without Wi-Fi, the page playing on
    ada.hold((0, 1), 30)                           # ducking a moment, then running on
    ada.hold((0, 0), 150)
    assert race_now(race_server)["racers"][0]["status"] == "reconnecting"
    answer = ada.send().json()
    assert answer["late"] is True and answer["tick"] == 240 and answer["alive"] is True
    assert race_now(race_server)["racers"][0]["status"] == "racing"


def test_inputs_later_than_the_slack_are_refused_and_the_racer_is_out(race_server):
    race = start_race(race_server)
    ada, bo = Racer(race_server, "Ada", reach=14), Racer(race_server, "Bo", reach=10, tires_at=10 ** 6)
    ada.join(race), bo.join(race)
    run_clock_to(race_server, race, 1)
    ada.play(60), bo.play(60)
    assert ada.send().status == 200 and bo.send().status == 200
    distance = race_now(race_server)["racers"][0]["distance"]
    run_clock_to(race_server, race, 12)             # Bo keeps in touch and running, so the race goes on
    bo.play(11 * 60)
    assert bo.send().json()["alive"] is True
    run_clock_to(race_server, race, 1 + dino.RACE_LATE_S + 1)
    ada.play(60 * (dino.RACE_LATE_S + 1))
    assert f"out of touch more than {dino.RACE_LATE_S} s" in error_of(ada.send(), 409)
    statuses = {r["name"]: (r["status"], r["distance"]) for r in race_now(race_server)["racers"]}
    assert statuses["Ada"] == ("out", distance)


def test_input_batches_are_limited_per_device(race_server):
    race = start_race(race_server)
    ada = Racer(race_server, "Ada")
    ada.join(race)
    run_clock_to(race_server, race, 1)
    burst, _ = dino.RACE_BATCHES
    statuses = [ada.send().status for _ in range(burst + 3)]
    assert statuses[:burst] == [200] * burst and statuses[burst:] == [429] * 3


# ----------------------------------------------------------------- the end

def test_a_silent_racer_is_out_at_the_last_distance_and_the_race_ends(race_server):
    race = start_race(race_server)
    ada, bo = Racer(race_server, "Ada", reach=14), Racer(race_server, "Bo", reach=6)
    ada.join(race), bo.join(race)
    run_clock_to(race_server, race, 2)
    ada.play(120), bo.play(120)
    ada.send(), bo.send()
    crash_all(race_server, race, [bo])
    run_clock_to(race_server, race, 2 + dino.RACE_LATE_S + 1)
    final = eventually(lambda: (lambda r: r if r["state"] == "done" else None)(race_now(race_server)), 10,
                       "the race to end once the silent racer is out")
    assert final["end"] == "finished"
    ada_row = next(r for r in final["racers"] if r["name"] == "Ada")
    assert ada_row["status"] == "out" and ada_row["tick"] == 120 and ada_row["run"] is None


def test_a_race_ends_at_its_time_limit_with_the_silent_out(race_server):
    race = start_race(race_server, time_limit_s=10)
    ada, bo = Racer(race_server, "Ada", reach=10, tires_at=10 ** 6), Racer(race_server, "Bo")
    ada.join(race), bo.join(race)
    run_clock_to(race_server, race, 1)
    ada.hold((0, 0), 60), bo.hold((0, 0), 60)
    assert ada.send().status == 200 and bo.send().status == 200
    run_clock_to(race_server, race, 9.9)            # Ada still sends; Bo's Wi-Fi went at 1 s
    ada.play(534)
    assert not ada.world.crashed and ada.send().status == 200
    run_clock_to(race_server, race, 10)
    final = eventually(lambda: (lambda r: r if r["state"] == "done" else None)(race_now(race_server)), 10,
                       "the race to end at its time limit")
    assert final["end"] == "time limit"
    assert {r["name"]: (r["status"], r["tick"]) for r in final["racers"]} == {
        "Ada": ("finished", 594), "Bo": ("out", 60)}
    # Ada's run, still going at the end, is on the board as a verified run that replays to its score.
    run_id = eventually(lambda: race_now(race_server)["racers"][0]["run"], 10, "Ada's run to be kept")
    run = race_server.call("GET", f"/runs/{run_id}").json()
    assert run["ticks"] == 594
    replay = dino.replay_run(race_server.app.sim_config, run["seed"], run["width"], run["inputs"], run["ticks"])
    assert not replay["crashed"] and replay["score"] == run["score"] == final["racers"][0]["score"]
    assert [r["name"] for r in race_server.call("GET", "/players").json()] == ["Ada"]


def test_the_results_download_as_csv_and_list_with_the_races(race_server):
    race = start_race(race_server, title="=Cup")
    racers = [Racer(race_server, name, reach) for name, reach in (("=Ada", 14), ("Chloé", 8))]
    for racer in racers:
        racer.join(race)
    crash_all(race_server, race, racers)
    eventually(lambda: race_now(race_server)["state"] == "done", 10, "the race to end")
    reply = race_server.call("GET", f"/races/{race['id']}.csv")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/csv")
    text = reply.body.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["place", "name", "score", "distance", "verified", "late", "status"]
    assert [row[1] for row in rows[1:]] == [r["name"].replace("=", "'=") for r in race_now(race_server)["racers"]]
    listed = race_server.call("GET", "/races").json()
    assert [(r["id"], r["title"], r["state"], r["racers"]) for r in listed] == [(race["id"], "=Cup", "done", 2)]


def test_a_restart_during_a_race_ends_it_interrupted_keeping_every_acknowledged_input(tmp_path):
    proc = Proc(tmp_path, tmp_path / "data").wait_ready()
    try:
        key = json.loads((proc.data_dir / "teacher.json").read_text(encoding="utf-8"))["key"]
        race = proc.call("POST", "/admin/races", {"countdown_s": 3}, {"Authorization": "Bearer " + key}).json()
        phone = {"Player-Key": "restart-phone-0123456789abcdef"}
        assert proc.call("POST", f"/races/{race['id']}/join", {"name": "Ada"}, phone).status == 200
        time.sleep((race["starts_at"] - race["server_now"]) / 1000 + 1.2)
        batch = {"seq": 0, "tick": 60, "inputs": [[10, 1, 0], [20, 0, 0]], "crashed": False}
        acknowledged = proc.call("POST", f"/races/{race['id']}/inputs", batch, phone)
        assert acknowledged.status == 200, acknowledged
        proc.kill9()
        proc.start()
        final = proc.call("GET", f"/races/{race['id']}").json()
        assert (final["state"], final["end"]) == ("done", "interrupted")
        assert [(r["name"], r["tick"], r["distance"]) for r in final["racers"]] == [
            ("Ada", 60, acknowledged.json()["distance"])]
        runs = proc.call("GET", f"/races/{race['id']}/runs").json()
        assert runs["racers"][0]["inputs"] == batch["inputs"]
    finally:
        proc.stop()


# ----------------------------------------------------------------- live

def read_events(sock, wanted, timeout_s=10):
    """Read SSE blocks from ``sock`` until ``wanted(kind, data)`` is true; the events read."""
    sock.settimeout(timeout_s)
    buffer, seen = b"", []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            lines = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line)
            if "event" in lines:
                seen.append((lines["event"], json.loads(lines["data"])))
                if wanted(*seen[-1]):
                    return seen
        chunk = sock.recv(65536)
        assert chunk, "the stream closed"
        buffer += chunk
    raise AssertionError(f"not seen in {timeout_s} s; saw {[kind for kind, _ in seen]}")


def open_stream(server, query=""):
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"GET /events{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def test_the_stream_tells_every_page_of_the_race_and_only_the_board_of_the_inputs(race_server):
    page, board = open_stream(race_server), open_stream(race_server, "?inputs=1")
    try:
        read_events(page, lambda kind, data: kind == "scores")
        read_events(board, lambda kind, data: kind == "scores")
        race = start_race(race_server)
        ada = Racer(race_server, "Ada")
        ada.join(race)
        read_events(page, lambda kind, data: kind == "race" and [r["name"] for r in data["racers"]] == ["Ada"])
        run_clock_to(race_server, race, 1)
        ada.play(60)
        ada.send()
        seen = read_events(board, lambda kind, data: kind == "race-inputs")
        relayed = seen[-1][1]
        assert (relayed["name"], relayed["tick"], relayed["inputs"]) == ("Ada", 60, ada.inputs)
        race_server.call("POST", "/admin/races/current/stop", None, race_server.teacher)
        seen = read_events(page, lambda kind, data: kind == "race" and data["state"] == "done")
        assert "race-inputs" not in [kind for kind, _ in seen]
    finally:
        page.close()
        board.close()
