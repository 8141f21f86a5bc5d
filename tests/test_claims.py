"""A name belongs to its child: the device that first played under it keeps it.

A page sends its own secret as the Player-Key header.  These tests play the
class's devices over HTTP against a real server process: two phones, a
curl without a key, and the teacher's console.
"""

import json
import sys
import time
import urllib.parse

import pytest

from conftest import ROOT, Proc

BEN_PHONE = {"Player-Key": "ben-phone-secret-0123456789abcdef"}
TOM_PHONE = {"Player-Key": "tom-phone-secret-0123456789abcdef"}
CLAIMED = ("'Ben' is already someone's name on another device. Pick another, "
           "or ask your teacher to move it to this device")


@pytest.fixture
def server(tmp_path):
    dino = Proc(tmp_path, tmp_path / "data").wait_ready()
    yield dino
    dino.stop()


def post(server, name, score, device=None, source="127.0.3.1"):
    return server.call("POST", "/score/" + urllib.parse.quote(name, safe=""), {"score": score},
                       headers=device, source=source)


def teacher(server):
    key = json.loads((server.data_dir / "teacher.json").read_text(encoding="utf-8"))["key"]
    return {"Authorization": "Bearer " + key}


def admin(server, method, path, body=None):
    return server.call(method, path, body, headers=teacher(server))


def error_of(reply, status):
    assert reply.status == status, reply
    return reply.json()["error"]


def scores(server, name):
    return server.call("GET", "/score/" + urllib.parse.quote(name, safe="")).json()["scores"]


def test_the_first_device_keeps_the_name_in_every_spelling(server):
    assert post(server, "Ben", 50, BEN_PHONE).json() == {"status": "success"}
    for spelling in ("Ben", "ben", "BEN", " Ben ", "𝔅𝔢𝔫", "ＢＥＮ"):
        assert error_of(post(server, spelling, 60, TOM_PHONE, source="127.0.3.2"), 409) == CLAIMED
    assert error_of(post(server, "ben", 70), 409) == CLAIMED   # curl, no key: the name is taken
    assert post(server, "BEN", 80, BEN_PHONE).status == 200    # the owner, in any spelling
    assert scores(server, "Ben") == [80, 50]


def test_a_plain_post_without_a_key_still_plays_under_a_free_name(server):
    assert post(server, "Zed", 5).json() == {"status": "success"}
    assert post(server, "Zed", 9).json() == {"status": "success"}
    assert scores(server, "Zed") == [9, 5]
    assert post(server, "Zed", 11, BEN_PHONE).status == 200    # the first page to play under it claims it
    assert error_of(post(server, "Zed", 12), 409).startswith("'Zed' is already someone's name")


def test_the_name_check_says_whose_name_it_is(server):
    post(server, "Ben", 50, BEN_PHONE)
    check = "/names/check?name=ben"
    assert server.call("GET", check, headers=BEN_PHONE).json() == {"name": "Ben", "yours": True}
    assert error_of(server.call("GET", check, headers=TOM_PHONE), 409) == CLAIMED
    assert server.call("GET", "/names/check?name=Tom", headers=TOM_PHONE).json() == {"name": "Tom", "yours": False}


def test_a_claim_survives_a_new_round_and_a_restart_with_the_claimants_spelling(server):
    post(server, "Mia", 40, BEN_PHONE)
    assert admin(server, "POST", "/admin/rounds", {"title": "Next"}).status == 201
    assert error_of(post(server, "𝕸𝖎𝖆", 99, TOM_PHONE, source="127.0.3.2"), 409).startswith("'Mia'")
    server.stop()
    server.start()
    assert error_of(post(server, "mia", 99, TOM_PHONE, source="127.0.3.2"), 409).startswith("'Mia'")
    assert post(server, "MIA", 41, BEN_PHONE).status == 200
    assert server.call("GET", "/score/Mia").json() == {"name": "Mia", "scores": [41]}


def test_a_claim_survives_kill_9(server):
    post(server, "Ada", 40, BEN_PHONE)
    server.kill9()
    server.start()
    assert error_of(post(server, "Ada", 41, TOM_PHONE, source="127.0.3.2"), 409).startswith("'Ada'")


def test_the_teacher_moves_a_name_to_the_device_that_asked_and_can_release_it(server):
    post(server, "Ben", 50, BEN_PHONE)
    post(server, "Ben", 60, TOM_PHONE, source="127.0.3.2")     # the new phone asks, and is refused
    claims = admin(server, "GET", "/admin/claims").json()["claims"]
    assert [(claim["name"], len(claim["asks"])) for claim in claims] == [("Ben", 1)]
    ask = claims[0]["asks"][0]
    assert ask["name"] == "Ben" and "secret" not in json.dumps(claims)
    assert admin(server, "PATCH", "/admin/claims/Ben", {"move_to": ask["id"]}).status == 200
    assert post(server, "Ben", 61, TOM_PHONE, source="127.0.3.2").status == 200
    assert error_of(post(server, "Ben", 51, BEN_PHONE), 409) == CLAIMED
    assert admin(server, "PATCH", "/admin/claims/Ben", {"release": True}).status == 200
    assert post(server, "Ben", 52).status == 200
    assert [item["action"] for item in admin(server, "GET", "/admin/log").json()][:2] == ["release name", "move name"]


def test_moving_a_name_nobody_asked_for_is_a_clear_404(server):
    post(server, "Ben", 50, BEN_PHONE)
    assert "no device asked" in error_of(admin(server, "PATCH", "/admin/claims/Ben", {"move_to": "abc"}), 404)
    assert "not claimed" in error_of(admin(server, "PATCH", "/admin/claims/Nobody", {"release": True}), 404)
    assert error_of(admin(server, "PATCH", "/admin/claims/Ben", {"move": 1}), 400)


def test_a_renamed_player_keeps_their_claim_under_the_new_name(server):
    post(server, "Bne", 50, BEN_PHONE)
    assert admin(server, "PATCH", "/admin/players/Bne", {"name": "Ben"}).status == 200
    assert error_of(post(server, "Ben", 1, TOM_PHONE, source="127.0.3.2"), 409) == CLAIMED
    assert post(server, "Ben", 55, BEN_PHONE).status == 200
    assert scores(server, "Ben") == [55, 50]


def test_a_suggested_name_is_held_for_the_device_it_was_offered_to(server):
    suggested = server.call("GET", "/names/suggest", headers=BEN_PHONE).json()["name"]
    message = error_of(post(server, suggested, 5, TOM_PHONE, source="127.0.3.2"), 409)
    assert message == f"{suggested!r} was just offered to another device; pick another name, " \
                      "or press 'Pick a name for me'"
    quoted = urllib.parse.quote(suggested)
    assert server.call("GET", "/names/check?name=" + quoted, headers=TOM_PHONE).status == 409
    assert server.call("GET", "/names/check?name=" + quoted, headers=BEN_PHONE).status == 200
    assert post(server, suggested, 5, BEN_PHONE).status == 200


def test_twenty_children_asking_at_once_are_never_offered_the_same_name(server):
    offered = [server.call("GET", "/names/suggest", headers={"Player-Key": f"child-{n:02d}-secret-0123456789"},
                           source=f"127.0.4.{n + 1}").json()["name"] for n in range(20)]
    assert len(offered) == 20 and len(set(offered)) == 20


def test_pressing_pick_a_name_until_refused_never_costs_the_child_a_score_or_the_teacher_a_sign_in(server):
    answers = [server.call("GET", "/names/suggest", headers=BEN_PHONE, source="127.0.3.9").status for _ in range(12)]
    assert answers.count(200) == 10 and answers[-1] == 429      # suggestions have their own limit ...
    assert post(server, "Ben", 5, BEN_PHONE, source="127.0.3.9").status == 200   # ... scores have theirs
    reply = server.call("POST", "/teacher/session", {"code": "not-a-code"}, source="127.0.3.9")
    assert reply.status == 401                                  # and sign-ins theirs, though all are 10 at once


@pytest.mark.parametrize("key", ["short", "x" * 129, "has space in it 0123456789", "ünïcödé-0123456789abc"])
def test_a_malformed_player_key_is_a_clear_400(server, key):
    reply = server.call("POST", "/score/Kim", {"score": 5}, headers={"Player-Key": key})
    assert "Player-Key" in error_of(reply, 400)
    assert server.call("GET", "/score/Kim").status == 404


def test_the_journal_and_the_snapshot_never_hold_a_player_key(server):
    post(server, "Ben", 50, BEN_PHONE)
    server.stop()   # compacts: the snapshot holds the claims
    stored = b"".join(path.read_bytes() for path in server.data_dir.iterdir() if path.is_file())
    assert b"Ben" in stored
    assert BEN_PHONE["Player-Key"].encode() not in stored


# ---------------------------------------------------------------- the class run

CLASS_SIZE = 30
RUNS_EACH = 3        # a stock of tickets taken as the page loads, each played out


def the_server_module():
    sys.path.insert(0, str(ROOT))
    import server
    return server


class Child:
    """One phone, as the page drives it: its own secret, its own address, a stock of tickets."""

    def __init__(self, number, server_proc):
        self.number, self.proc = number, server_proc
        self.headers = {"Player-Key": f"phone-{number:02d}-" + "s" * 24}
        self.source = f"127.0.5.{number + 1}"
        self.tickets, self.waiting, self.name, self.renamed = [], [], None, False

    def call(self, method, path, body=None):
        return self.proc.call(method, path, body, headers=self.headers, source=self.source)

    def stock_tickets(self, count):
        for _ in range(count):
            reply = self.call("POST", "/runs")
            assert reply.status == 201, reply
            self.tickets.append(reply.json())

    def play(self, sim, config):
        """Play a run on the next ticket; it waits in the page until it is posted."""
        ticket = self.tickets.pop(0)
        result = sim.replay_run(config, ticket["seed"], 600, [], 10 ** 6)
        self.waiting.append({"score": result["score"], "run": ticket["run"], "width": 600, "inputs": []})

    def pick_name(self, typed):
        """A typed name if the server says it is free for this phone, else "Pick a name for me"."""
        if typed is not None and self.call("GET", "/names/check?name=" + urllib.parse.quote(typed)).status == 200:
            self.name = typed
        else:
            self.name = self.call("GET", "/names/suggest").json()["name"]

    def post_waiting(self):
        """Post the waiting runs; a name someone claimed first keeps them waiting for another name."""
        answers = []
        while self.waiting:
            reply = self.call("POST", "/score/" + urllib.parse.quote(self.name), self.waiting[0])
            if reply.status == 409 and "someone's name" in reply.json()["error"]:
                self.renamed = True
                self.pick_name(None)
                continue
            self.waiting.pop(0)
            answers.append((reply.status, reply.json()))
        return answers


def test_a_class_of_thirty_phones_with_a_restart_and_a_new_round_keeps_every_run_and_one_row_each(tmp_path):
    sim = the_server_module()
    config = sim.read_sim_config()
    proc = Proc(tmp_path, tmp_path / "data").wait_ready()
    try:
        children = [Child(n, proc) for n in range(CLASS_SIZE)]
        typed = ["Ben", "Mia", "ben", "Leo", "𝕸𝖎𝖆", "Ada", "Zoë", "Omar", "Yuki", "Ada"] + [None] * 20
        for child in children:
            child.stock_tickets(RUNS_EACH)
            child.play(sim, config)              # the first game, before any name is typed
        for child, name in zip(children, typed):
            child.pick_name(name)
        time.sleep(6)                            # the runs took about 4.5 s of play each
        answers = [answer for child in children for answer in child.post_waiting()]
        proc.kill9()                             # the laptop's lid closes mid-lesson
        for child in children:
            child.play(sim, config)              # played on stocked tickets while the server is down
        proc.start()
        time.sleep(6)
        answers += [answer for child in children for answer in child.post_waiting()]
        teacher = json.loads((proc.data_dir / "teacher.json").read_text(encoding="utf-8"))["key"]
        assert proc.call("POST", "/admin/rounds", {"title": "Round 2"},
                         headers={"Authorization": "Bearer " + teacher}).status == 201
        for child in children:
            child.play(sim, config)
        time.sleep(6)
        answers += [answer for child in children for answer in child.post_waiting()]
        assert len(answers) == CLASS_SIZE * RUNS_EACH
        assert sum(child.renamed for child in children) == 3   # the second Ben, Mia and Ada picked again
        assert set(map(json.dumps, (body for _, body in answers))) == {
            json.dumps({"status": "success", "verified": True})}
        names = [child.name for child in children]
        assert len(set(map(str.casefold, names))) == CLASS_SIZE          # nobody shares a row
        rows = proc.call("GET", "/players?limit=100").json()
        assert sorted(row["name"] for row in rows) == sorted(names)      # the new round: one row each
        archived = proc.call("GET", "/rounds/1").json()["board"]
        assert sorted(row["name"] for row in archived) == sorted(names)
        assert all(row["verified"] for row in rows + archived)
    finally:
        proc.stop()
