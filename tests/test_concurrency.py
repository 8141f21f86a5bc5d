"""Many clients doing conflicting things at once: nothing acknowledged is lost, doubled or let in twice.

Each test starts server.py in a subprocess and runs its clients in threads,
each request on a connection of its own and most from a loopback address of
their own (127.x.y.z), as a class of devices would.  They post scores while
the teacher starts new rounds, post one run ticket from many connections,
post lookalike names together and flood the class with new names, and the
teacher reads the whole list while children read the top 10.  Then the tests
check what users see: every acknowledged score in exactly one round, one kept
run per ticket, no two players with one skeleton in a round, no 5xx, and the
same after a kill -9 and a restart.
"""

import itertools
import json
import threading
import time
import urllib.parse
from http.client import HTTPException

import pytest

import server as dino  # in-process only to replay idle runs, seed a big board and compare skeletons
from conftest import Proc, call, count_unverified

LOOKALIKE_LATIN = "aeopcyxkmt"          # each of these Latin letters ...
LOOKALIKE_CYRILLIC = "аеорсухкмт"       # ... looks like the Cyrillic letter at its place here
RUN_MARGIN_S = 1.0                      # issued_at is whole seconds: post a run this long after it may be
TEACHER_LIST_PLAYERS = 20_000           # the teacher's list is read on a board this big
NAME_DIGITS = "bcdfghjkmnpqstxz"        # numbered names spell no word the rude-name filter knows, and
                                        # no two look alike (no l, r or v: cl, rn and vv read as d, m, w)


# ---------------------------------------------------------------- clients

_addresses = itertools.count()


def fresh_address():
    """A loopback address no other client in this module used: a device of its own."""
    n = next(_addresses)
    return f"127.{10 + n // 62_500}.{n // 250 % 250}.{n % 250 + 1}"


class Clients:
    """The clients of one server: they count their answers and keep every 5xx, so a test can say there was none."""

    def __init__(self, server):
        self.server = server
        self.key = json.loads((server.data_dir / "teacher.json").read_text(encoding="utf-8"))["key"]
        self.lock = threading.Lock()
        self.answered = 0
        self.failures = []   # (method, path, Reply) of every 5xx

    def send(self, method, path, body=None, source=None, teacher=False):
        headers = {"Authorization": "Bearer " + self.key} if teacher else None
        reply = call(self.server.port, method, path, body, headers, timeout=30, source=source)
        with self.lock:
            self.answered += 1
            if reply.status >= 500:
                self.failures.append((method, path, reply))
        return reply

    def get(self, path, teacher=False):
        reply = self.send("GET", path, teacher=teacher)
        assert reply.status == 200, reply
        return reply.json()

    def post_score(self, name, body, source=None):
        if isinstance(body, int):
            body = {"score": body}
        return self.send("POST", "/score/" + urllib.parse.quote(name, safe=""), body,
                         source=source or fresh_address())

    def let_names_in(self):
        """The teacher lifts the class rate of new names: these tests add far more than a class does."""
        reply = self.send("POST", "/admin/names/let-in", teacher=True)
        assert reply.status == 200, reply

@pytest.fixture
def start(tmp_path):
    """start() -> server.py in a subprocess on tmp_path/data, stopped after the test whatever happened."""
    servers = []

    def start():
        server = Proc(tmp_path, tmp_path / "data")
        servers.append(server)
        server.wait_ready()
        count_unverified(server)  # plain posts on the boards and in the round archives, as an older page's class
        return server
    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start):
    return start()


def restart_after_kill9(server):
    server.kill9()
    return server.start()


def together(*jobs):
    """Run each job (a function of no arguments) in a thread of its own, all at once; their results in order.

    A job's exception is raised here, so an assertion in a client thread fails the test.
    """
    results, errors = [None] * len(jobs), []

    def run(i, job):
        try:
            results[i] = job()
        except BaseException as error:  # handed to the test's thread below
            errors.append(error)
    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def at_once(count, job):
    """``count`` copies of job(i), released together by a barrier; their results in order."""
    gate = threading.Barrier(count)

    def released(i):
        gate.wait()
        return job(i)
    return together(*(lambda i=i: released(i) for i in range(count)))


# ---------------------------------------------------------------- runs

def take_tickets(clients, count):
    tickets = []
    for _ in range(count):
        reply = clients.send("POST", "/runs", source=fresh_address())
        assert reply.status == 201, reply
        tickets.append(reply.json())
    return tickets


def idle_run(config, ticket):
    """The run of a child who never presses a key: it meets the first cactus after about 4.5 s of play."""
    result = dino.replay_run(config, ticket["seed"], 600, [], 10 ** 6)
    assert result["crashed"]
    return {"score": result["score"], "run": ticket["run"], "width": 600, "inputs": []}, result["ticks"]


def playable_runs(clients, count):
    """``count`` idle runs on fresh tickets, and the wall time from which all may be posted.

    A run is never taken faster than it was played, so each may be posted
    once its ticks (less the server's slack) have passed since its ticket.
    """
    config = dino.read_sim_config()
    taken_at = time.time()
    runs, longest = [], 0
    for ticket in take_tickets(clients, count):
        run, ticks = idle_run(config, ticket)
        runs.append(run)
        longest = max(longest, ticks)
    return runs, taken_at + longest / config["ticksPerSecond"] - dino.RUN_SLACK_S + RUN_MARGIN_S


def wait_until(wall_time):
    time.sleep(max(0.0, wall_time - time.time()))


def error_of(reply):
    return reply.json()["error"]


# ---------------------------------------------------------------- names

def numbered(word, *numbers):
    """A name like "Kid cd b": numbers spelled in consonants, as digits spell words once the filter folds them."""
    def spelled(n):
        return NAME_DIGITS[n] if n < len(NAME_DIGITS) else spelled(n // len(NAME_DIGITS)) + NAME_DIGITS[
            n % len(NAME_DIGITS)]
    return " ".join([word, *map(spelled, numbers)])


def lookalike_pairs(count):
    """``count`` pairs of names, one in Latin letters and one in Cyrillic, that look the same."""
    to_cyrillic = str.maketrans(LOOKALIKE_LATIN, LOOKALIKE_CYRILLIC)
    pairs = []
    for n in range(count):
        letters = "".join(LOOKALIKE_LATIN[(n * 7 + i * (n + 3)) % len(LOOKALIKE_LATIN)] for i in range(6))
        latin = f"{letters} {n}"
        pairs.append((latin, latin.translate(to_cyrillic)))
    assert all(dino.skeleton(a) == dino.skeleton(b) and a != b for a, b in pairs)
    return pairs


# ---------------------------------------------------------------- what users see afterwards

def round_boards(clients):
    """Every round's final board by id: each archived round and the current one."""
    boards = {summary["id"]: clients.get(f"/rounds/{summary['id']}")["board"]
              for summary in clients.get("/rounds")}
    current = clients.get("/rounds/current")
    boards[current["id"]] = current["board"]
    return boards


def rounds_holding(boards, name):
    """(round id, row) of every round whose board holds ``name``."""
    return [(round_id, row) for round_id, board in boards.items() for row in board if row["name"] == name]


def assert_each_in_exactly_one_round(boards, acknowledged):
    """Every acknowledged (name, score) is on the board of exactly one round, as that player's best."""
    assert acknowledged
    for name, score in acknowledged.items():
        found = rounds_holding(boards, name)
        assert len(found) == 1, (name, score, found)
        assert found[0][1]["best"] == score, (name, score, found)


def assert_no_two_lookalikes_in_a_round(boards):
    assert boards
    for round_id, board in boards.items():
        shapes = [dino.skeleton(row["name"]) for row in board]
        assert len(shapes) == len(set(shapes)), (round_id, sorted(shapes))


def assert_nothing_failed(clients):
    assert clients.answered
    assert clients.failures == []
    assert "Traceback" not in clients.server.output()


# ================================================================ all at once

def test_a_class_doing_everything_at_once_loses_and_doubles_nothing_even_across_a_kill_9(server):
    clients = Clients(server)
    clients.let_names_in()
    runs, playable_at = playable_runs(clients, 6)
    many_names_runs, one_name_runs = runs[:4], runs[4:]
    pairs = lookalike_pairs(12)
    acknowledged, lock = {}, threading.Lock()
    done = threading.Event()

    def keep(name, score, reply):
        if reply.status == 200:
            with lock:
                acknowledged[name] = score
        return reply

    def poster(k):
        for i in itertools.count():
            if done.is_set() or i == 400:
                return
            name, score = numbered("Kid", k, i), k * 1000 + i
            reply = keep(name, score, clients.post_score(name, score))
            assert reply.status == 200, reply

    def teacher_starts_rounds():
        started = 0
        while not done.is_set():
            reply = clients.send("POST", "/admin/rounds", {"title": f"Round {started + 2}"}, teacher=True)
            assert reply.status == 201, reply
            started += 1
            time.sleep(0.05)
        return started

    def teacher_reads_the_list():
        while not done.is_set():
            assert clients.send("GET", "/admin/players", teacher=True).status == 200

    def child_reads_the_top_10():
        while not done.is_set():
            assert clients.send("GET", "/players?limit=10").status == 200

    def one_ticket_under_many_names(g):
        run = many_names_runs[g]
        wait_until(playable_at)
        replies = at_once(8, lambda j: keep(numbered("Ticket", g, j), run["score"],
                                             clients.post_score(numbered("Ticket", g, j), run)))
        return [reply.status for reply in replies]

    def one_ticket_under_one_name(g):
        run = one_name_runs[g]
        wait_until(playable_at)
        replies = at_once(8, lambda j: keep(numbered("Solo", g), run["score"], clients.post_score(numbered("Solo", g), run)))
        return [(reply.status, reply.json()) for reply in replies]

    def lookalikes_together(pair):
        replies = at_once(2, lambda j: keep(pair[j], 500 + j, clients.post_score(pair[j], 500 + j)))
        return [reply.status for reply in replies]

    def flood(f):
        for i in range(10):
            keep(numbered("Flood", f, i), 7, clients.post_score(numbered("Flood", f, i), 7))

    def conflicting():
        results = together(*(lambda g=g: one_ticket_under_many_names(g) for g in range(len(many_names_runs))),
                           *(lambda g=g: one_ticket_under_one_name(g) for g in range(len(one_name_runs))),
                           *(lambda pair=pair: lookalikes_together(pair) for pair in pairs),
                           *(lambda f=f: flood(f) for f in range(20)))
        done.set()
        return results

    results = together(conflicting, teacher_starts_rounds, teacher_reads_the_list,
                       *(lambda k=k: poster(k) for k in range(8)), *(child_reads_the_top_10 for _ in range(3)))
    ticket_results = results[0]
    rounds_started = results[1]
    assert rounds_started > 1

    for statuses in ticket_results[:len(many_names_runs)]:
        assert sorted(statuses) == [200] + [409] * 7
    for answers in ticket_results[len(many_names_runs):len(runs)]:
        assert answers == [(200, {"status": "success", "verified": True})] * 8
    for statuses in ticket_results[len(runs):len(runs) + len(pairs)]:
        assert sorted(statuses) in ([200, 200], [200, 409])  # both only if a new round came between

    def check():
        boards = round_boards(clients)
        assert len(boards) == rounds_started + 1
        assert_each_in_exactly_one_round(boards, acknowledged)
        for g in range(len(many_names_runs)):
            kept = [found for j in range(8) for found in rounds_holding(boards, numbered("Ticket", g, j))]
            assert len(kept) == 1 and kept[0][1]["verified"], kept
        for g in range(len(one_name_runs)):
            kept = rounds_holding(boards, numbered("Solo", g))
            assert len(kept) == 1 and kept[0][1]["verified"], kept
        assert_no_two_lookalikes_in_a_round(boards)

    check()
    restart_after_kill9(server)
    check()
    assert_nothing_failed(clients)


def test_scores_acknowledged_before_a_kill_9_in_the_middle_of_new_rounds_are_each_in_one_round(server):
    clients = Clients(server)
    clients.let_names_in()
    acknowledged, sent, lock = {}, {}, threading.Lock()
    rounds_acknowledged = []
    killed = threading.Event()

    def poster(k):
        for i in range(400):
            name, score = numbered("Kid", k, i), k * 1000 + i
            with lock:
                sent[name] = score
            try:
                reply = clients.post_score(name, score)
            except (OSError, HTTPException):  # killed with the request in flight: not acknowledged
                return
            if reply.status == 200:
                with lock:
                    acknowledged[name] = score

    def teacher():
        while True:
            try:
                reply = clients.send("POST", "/admin/rounds", {"title": "again"}, teacher=True)
            except (OSError, HTTPException):
                return
            if reply.status == 201:
                rounds_acknowledged.append(reply.json()["id"])
            time.sleep(0.03)

    def killer():
        give_up = time.monotonic() + 20
        while len(rounds_acknowledged) < 10 and time.monotonic() < give_up:
            time.sleep(0.01)
        server.kill9()
        killed.set()

    together(killer, teacher, *(lambda k=k: poster(k) for k in range(8)))
    assert killed.is_set()
    server.start()
    boards = round_boards(clients)
    assert set(rounds_acknowledged) <= set(boards)
    assert_each_in_exactly_one_round(boards, acknowledged)
    for name in set(sent) - set(acknowledged):  # in flight at the kill: kept or not, but never twice
        assert len(rounds_holding(boards, name)) <= 1, name
    assert clients.failures == []


# ================================================================ one ticket, one run

def test_one_ticket_posted_under_many_names_at_once_is_kept_for_one_of_them(server):
    clients = Clients(server)
    (run,), playable_at = playable_runs(clients, 1)
    names = [numbered("Racer", j) for j in range(12)]
    wait_until(playable_at)
    replies = at_once(len(names), lambda j: clients.post_score(names[j], run))
    kept = [name for name, reply in zip(names, replies) if reply.status == 200]
    assert len(kept) == 1, replies
    for reply in replies:
        if reply.status != 200:
            assert reply.status == 409, reply
            assert "one ticket is one run" in error_of(reply)

    def check():
        assert clients.get("/runs/" + run["run"])["name"] == kept[0]
        assert [player["name"] for player in clients.get("/players")] == kept
        for name in names:
            assert clients.send("GET", "/score/" + urllib.parse.quote(name)).status == (
                200 if name in kept else 404)

    check()
    restart_after_kill9(server)
    check()
    assert_nothing_failed(clients)


def test_one_ticket_posted_under_one_name_from_many_connections_is_kept_once_and_answered_alike(server):
    clients = Clients(server)
    (run,), playable_at = playable_runs(clients, 1)
    wait_until(playable_at)
    replies = at_once(12, lambda j: clients.post_score("Ada", run))
    assert [(reply.status, reply.json()) for reply in replies] == [(200, {"status": "success", "verified": True})] * 12

    def check():
        scores = clients.get("/players/Ada")["scores"]
        assert [(score["score"], score["verified"], score["run"]) for score in scores] == [
            (run["score"], True, run["run"])]
        assert clients.get("/score/Ada")["scores"] == [run["score"]]

    check()
    restart_after_kill9(server)
    check()
    assert_nothing_failed(clients)


def test_another_run_on_a_ticket_used_at_the_same_moment_is_refused(server):
    clients = Clients(server)
    (run,), playable_at = playable_runs(clients, 1)
    forged = dict(run, score=run["score"] + 1)  # not what its inputs score
    wait_until(playable_at)
    replies = at_once(12, lambda j: clients.post_score("Ada", run if j % 2 else forged))
    statuses = [reply.status for reply in replies]
    assert statuses.count(200) == 6, replies  # the one kept run, and its reposts answered alike
    assert all(reply.status in (409, 422) for reply in replies if reply.status != 200), replies
    assert clients.get("/score/Ada")["scores"] == [run["score"]]
    assert_nothing_failed(clients)


# ================================================================ names

def test_lookalike_names_posted_at_the_same_moment_admit_exactly_one(server):
    clients = Clients(server)
    pairs = lookalike_pairs(20)
    admitted = []
    for pair in pairs:
        replies = at_once(2, lambda j: clients.post_score(pair[j], 10 + j))
        assert sorted(reply.status for reply in replies) == [200, 409], (pair, replies)
        refused = next(reply for reply in replies if reply.status == 409)
        assert "looks like the existing player" in error_of(refused)
        admitted.append(next(name for name, reply in zip(pair, replies) if reply.status == 200))

    def check():
        names = sorted(player["name"] for player in clients.get("/players"))
        assert names == sorted(admitted)
        assert_no_two_lookalikes_in_a_round(round_boards(clients))

    check()
    restart_after_kill9(server)
    check()
    assert_nothing_failed(clients)


def test_a_flood_of_new_names_from_many_devices_is_held_at_the_class_rate(server):
    clients = Clients(server)
    names = [numbered("Stranger", n) for n in range(300)]
    replies = at_once(30, lambda t: [(name, clients.post_score(name, 3)) for name in names[t::30]])
    answered = [pair for chunk in replies for pair in chunk]
    admitted = {name for name, reply in answered if reply.status == 200}
    held = {name for name, reply in answered if reply.status != 200}
    assert 0 < len(admitted) <= dino.CLASS_NEW_NAMES[0]
    assert len(admitted) + len(held) == len(names)
    for name, reply in answered:
        if reply.status != 200:
            assert reply.status == 429, reply
            assert "faster than a class types them" in error_of(reply)
            assert int(reply.headers["Retry-After"]) > 0

    listed = clients.get("/admin/held", teacher=True)
    assert listed["names"] and set(listed["names"]) <= held
    assert len(listed["names"]) == min(len(held), dino.HELD_NAMES_SHOWN)

    def check():
        assert {row["name"] for row in clients.get("/scores")} == admitted

    check()
    clients.let_names_in()
    assert clients.get("/admin/held", teacher=True)["names"] == []   # let in: the console stops announcing them
    late = listed["names"][0]
    assert clients.post_score(late, 3).status == 200
    admitted.add(late)
    check()
    restart_after_kill9(server)
    check()
    assert_nothing_failed(clients)


# ================================================================ the teacher's list

def seed_board(data_dir, players):
    """A data directory holding ``players`` players of one plain score each, saved by server.py's own code."""
    state = dino.State(on_change=lambda: None)
    storage = dino.Storage(str(data_dir), state, log=print)
    for i in range(players):
        record = dino.score_record(f"p{i}", i)
        record["seq"] = i + 1
        state.apply(record)
    storage.applied_seq = players
    storage.close()


def test_the_teachers_list_on_a_big_board_while_children_read_the_top_10_and_post(tmp_path, start):
    (tmp_path / "data").mkdir()
    seed_board(tmp_path / "data", TEACHER_LIST_PLAYERS)
    server = start()
    clients = Clients(server)
    done = threading.Event()
    top = TEACHER_LIST_PLAYERS + 100   # posts beat every seeded score

    def teacher():
        pages = 0
        for offset in range(0, TEACHER_LIST_PLAYERS, dino.ADMIN_PAGE):
            rows = clients.get(f"/admin/players?offset={offset}", teacher=True)
            assert 0 < len(rows) <= dino.ADMIN_PAGE
            pages += 1
        done.set()
        return pages

    def child():
        for reads in itertools.count(1):  # at least once, however soon the teacher is done
            rows = clients.get("/players?limit=10")
            assert len(rows) == 10
            bests = [row["best"] for row in rows]
            assert bests == sorted(bests, reverse=True) and bests[0] >= TEACHER_LIST_PLAYERS - 1
            if done.is_set():
                return reads

    def poster(k):
        for i in range(30):
            assert clients.post_score(f"p{k * 30 + i}", top + k * 30 + i).status == 200

    results = together(teacher, *(child for _ in range(4)), *(lambda k=k: poster(k) for k in range(3)))
    assert results[0] == TEACHER_LIST_PLAYERS // dino.ADMIN_PAGE

    def check():
        best = top + 89
        assert clients.get("/players?limit=1")[0] == {"name": "p89", "best": best, "rank": 1, "verified": False,
                                                      "run": None}
        walked = [row["name"] for offset in range(0, TEACHER_LIST_PLAYERS, dino.ADMIN_PAGE)
                  for row in clients.get(f"/admin/players?offset={offset}", teacher=True)]
        assert sorted(walked) == sorted(f"p{i}" for i in range(TEACHER_LIST_PLAYERS))

    check()
    restart_after_kill9(server)
    check()
    assert_nothing_failed(clients)
