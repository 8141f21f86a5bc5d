"""The Dino server's specification, as tests.

Run: python3 -m pytest -q test_server.py

Each test states one behaviour a player, a student's bot or a teacher can
see. Most tests drive an in-process server (server.make_server on port 0
with a temporary data directory); the ones about the process itself (kill -9,
signals, the command line, the banner, the log, startup refusals) run
server.py as a subprocess. Only loopback addresses are used.

How a draw counts: a move that ends a game in a draw answers outcome "draw"
with the final state; the game's stats count it in "total" only, neither in
"win" nor in "lose" (see the tic-tac-toe and plugin draw tests).
"""
import base64
import collections
import errno
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from conftest import (WINDOWS, Proc, Reply, call, count_unverified, free_port, post_score, retry_start,
                      run_to_the_end, subprocess_env, unix_only)

REPO = Path(__file__).resolve().parent
SERVER_PY = REPO / "server.py"
GAME_DIR = REPO / "game"
MAX_BODY_BYTES = 64 * 1024
MAX_RUN_BYTES = 256 * 1024
MAX_SCORE = 10_000_000


# --------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------

def name_path(name, prefix="/score/"):
    return prefix + quote(name, safe="")


def assert_json_error(reply, status):
    """The answer is `status` (an int, or a (low, high) range) with a JSON {"error": ...}."""
    if isinstance(status, tuple):
        assert status[0] <= reply.status <= status[1], reply
    else:
        assert reply.status == status, reply
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply
    body = json.loads(reply.body)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), reply
    assert body["error"].strip(), reply
    assert "Traceback" not in body["error"], reply
    return body["error"]


class RawConnection:
    """A bare socket to send exact bytes and parse exact responses."""

    def __init__(self, port, timeout=5):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def response(self, head=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head_bytes, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = http.client.HTTPMessage()
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip()] = value.strip()
        if head:
            length = 0
        elif headers.get("Content-Length") is not None:
            length = int(headers["Content-Length"])
        else:  # no length: the body runs to the end of the connection
            try:
                while True:
                    self._fill()
            except (EOFError, ConnectionResetError):
                pass
            length = len(self.buf)
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return Reply(status, headers, body)

    def closed_by_server(self, timeout=3):
        """True when the server ends the connection (EOF or reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def raw_exchange(port, data, timeout=5):
    conn = RawConnection(port, timeout)
    try:
        conn.send(data)
        return conn.response()
    finally:
        conn.close()


# --------------------------------------------------------------------------
# In-process server
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def srvmod():
    if not SERVER_PY.exists():
        pytest.fail(f"{SERVER_PY} does not exist yet")
    sys.path.insert(0, str(REPO))
    import server
    return server


class Live:
    """A server.make_server instance serving from a daemon thread."""

    def __init__(self, mod, data_dir, **options):
        opts = dict(host="127.0.0.1", port=0, data_dir=str(data_dir), quiet=True)
        opts.update(options)
        self.srv = mod.make_server(**opts)
        self.port = self.srv.server_address[1]
        self.data_dir = Path(data_dir)
        self.closed = False
        # a short poll interval only makes close() return sooner
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.01},
                                       daemon=True)
        self.thread.start()

    def call(self, method, path, body=None, headers=None, timeout=10, source=None):
        return call(self.port, method, path, body, headers, timeout, source)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def post_score(self, name, score):
        return self.post(name_path(name), {"score": score})

    def scores_of(self, name):
        reply = self.get(name_path(name))
        assert reply.status == 200, reply
        return reply.json()["scores"]

    def board(self, query=""):
        reply = self.get("/scores" + query)
        assert reply.status == 200, reply
        return reply.json()

    # game API
    def create(self, name="bot"):
        reply = self.post(name_path(name, "/create/"))
        assert reply.status == 201, reply
        return reply.json()["token"]

    def api(self, method, path, token=None, **params):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method in ("GET", "HEAD"):
            query = urlencode(params)
            return self.call(method, path + ("?" + query if query else ""), headers=headers)
        return self.call(method, path, params, headers=headers)

    def ok(self, method, path, token=None, **params):
        reply = self.api(method, path, token, **params)
        assert reply.status == 200, reply
        return reply.json()

    def close(self):
        if not self.closed:
            self.closed = True
            self.srv.close()
            self.thread.join(5)


@pytest.fixture
def start(srvmod, tmp_path):
    """start(data_dir=None, **options) -> Live; every server is closed at teardown."""
    servers = []

    def _start(data_dir=None, **options):
        data = Path(data_dir) if data_dir else tmp_path / "data"
        data.mkdir(parents=True, exist_ok=True)
        live = Live(srvmod, data, **options)
        servers.append(live)
        return live

    yield _start
    for live in servers:
        live.close()


@pytest.fixture
def live(start):
    return start()


@pytest.fixture
def unlimited(start):
    """A server with per-client limits off, for load from one address (as --client-limits off)."""
    return start(client_limits=False)


CANARY = {"name": "canary-player", "score": 4242}


@pytest.fixture(scope="module")
def shared(srvmod, tmp_path_factory):
    """One server per module for the tables of refused requests: none of them may store anything.

    It holds one score, CANARY, so a test can check that the leaderboard did not change.
    """
    live = Live(srvmod, tmp_path_factory.mktemp("shared") / "data")
    assert live.post_score(CANARY["name"], CANARY["score"]).status == 200
    yield live
    live.close()


# --------------------------------------------------------------------------
# Subprocess server
# --------------------------------------------------------------------------

@pytest.fixture
def spawn(tmp_path):
    """spawn(data_dir, *args, quiet=True) -> a ready Proc; all stopped at teardown."""
    procs = []

    def _spawn(data_dir, *args, quiet=True, ready=True):
        proc = Proc(tmp_path, data_dir, *args, quiet=quiet)
        procs.append(proc)
        return proc.wait_ready() if ready else proc

    yield _spawn
    for proc in procs:
        proc.stop()


def assert_one_line_startup_error(result, *needles):
    """Exit code 1 and exactly one non-empty stderr line `error: ...` containing needles."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def file_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.is_file()}


def assert_files_untouched(directory, before):
    """Every file that was there is still there, byte for byte (new lock files may appear)."""
    after = file_bytes(directory)
    assert {name: after.get(name) for name in before} == before


def page_bytes(name):
    path = GAME_DIR / name
    if not path.exists():
        pytest.skip(f"{path} does not exist yet (the game issue adds it)")
    return path.read_bytes()


# ==========================================================================
# Leaderboard: the endpoint table
# ==========================================================================

def test_health_check_answers_ok(live):
    reply = live.get("/health-check")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == {"status": "ok"}


@pytest.mark.parametrize("path, page", [("/", "dino.html"), ("/user", "user.html")],
                         ids=["home-is-the-game-page", "user-is-the-player-page"])
def test_page_paths_serve_their_page(live, path, page):
    reply = live.get(path)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.body == page_bytes(page)


def test_the_game_engine_is_served_as_a_script_the_game_page_loads(live):
    reply = live.get("/engine.js")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/javascript")
    assert reply.body == page_bytes("engine.js") and b"// CONFIG begin" in reply.body
    assert b'<script src="/engine.js"></script>' in live.get("/").body


def test_user_page_accepts_a_name_in_the_query(live):
    expected = page_bytes("user.html")
    reply = live.get("/user?name=rutu")
    assert reply.status == 200
    assert reply.body == expected


def test_posting_a_score_answers_success(live):
    reply = live.post_score("rutu", 533)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == {"status": "success"}


def test_player_scores_are_listed_best_first(live):
    for score in (91, 533, 214, 341):
        assert live.post_score("rutu", score).status == 200
    reply = live.get("/score/rutu")
    assert reply.status == 200
    assert reply.json() == {"name": "rutu", "scores": [533, 341, 214, 91]}


def test_unknown_player_is_404(live):
    assert_json_error(live.get("/score/nobody"), 404)


def test_scores_lists_every_kept_score_best_first(live):
    live.post_score("rutu", 533)
    live.post_score("not-rutu", 288)
    live.post_score("rutu", 341)
    live.post_score("zed", 5)
    assert live.board() == [
        {"name": "rutu", "score": 533},
        {"name": "rutu", "score": 341},
        {"name": "not-rutu", "score": 288},
        {"name": "zed", "score": 5},
    ]


def test_empty_leaderboard_is_an_empty_list(live):
    assert live.board() == []


def test_lowest_and_highest_allowed_scores_are_kept(live):
    assert live.post_score("edge", 0).status == 200
    assert live.post_score("edge", MAX_SCORE).status == 200
    assert live.scores_of("edge") == [MAX_SCORE, 0]


def test_missing_data_directory_is_created(srvmod, tmp_path):
    data = tmp_path / "fresh" / "data"
    live = Live(srvmod, data)
    try:
        assert live.post_score("first", 1).status == 200
        assert data.is_dir()
    finally:
        live.close()


# ==========================================================================
# Leaderboard: the top-5 rules
# ==========================================================================

def test_sixth_score_drops_the_lowest(live):
    for score in (10, 20, 30, 40, 50):
        live.post_score("six", score)
    live.post_score("six", 35)
    assert live.scores_of("six") == [50, 40, 35, 30, 20]


def test_score_lower_than_all_five_is_not_kept(live):
    for score in (10, 20, 30, 40, 50):
        live.post_score("low", score)
    assert live.post_score("low", 5).status == 200
    assert live.scores_of("low") == [50, 40, 30, 20, 10]


def test_duplicate_scores_count_as_separate_scores(live):
    for score in (100, 100, 50, 100):
        live.post_score("dup", score)
    assert live.scores_of("dup") == [100, 100, 100, 50]
    live.post_score("dup", 100)
    live.post_score("dup", 100)
    assert live.scores_of("dup") == [100, 100, 100, 100, 100]


def test_leaderboard_shows_only_the_kept_five(live):
    for score in range(1, 9):
        live.post_score("many", score)
    assert [row["score"] for row in live.board()] == [8, 7, 6, 5, 4]


# ==========================================================================
# Leaderboard: /scores ordering and paging
# ==========================================================================

def test_equal_scores_are_listed_in_posting_order(live):
    live.post_score("bea", 100)
    live.post_score("al", 300)
    live.post_score("cy", 100)
    live.post_score("al", 100)
    live.post_score("bea", 200)
    assert live.board() == [
        {"name": "al", "score": 300},
        {"name": "bea", "score": 200},
        {"name": "bea", "score": 100},
        {"name": "cy", "score": 100},
        {"name": "al", "score": 100},
    ]


def test_equal_scores_keep_posting_order_after_restart(start, tmp_path):
    first = start()
    for name in ("zz", "mm", "aa", "mm"):
        first.post_score(name, 7)
    expected = first.board()
    first.close()
    assert start(tmp_path / "data").board() == expected


@pytest.fixture
def ten_scores(unlimited):
    live = unlimited
    for i in range(10):
        live.post_score(f"p{i}", 1000 - i)
    return live


def test_scores_limit_returns_the_best_n(ten_scores):
    assert ten_scores.board("?limit=3") == [
        {"name": "p0", "score": 1000},
        {"name": "p1", "score": 999},
        {"name": "p2", "score": 998},
    ]


def test_scores_offset_skips_the_best_m(ten_scores):
    assert ten_scores.board("?offset=8") == [
        {"name": "p8", "score": 992},
        {"name": "p9", "score": 991},
    ]


def test_scores_limit_and_offset_page_together(ten_scores):
    assert ten_scores.board("?limit=2&offset=4") == [
        {"name": "p4", "score": 996},
        {"name": "p5", "score": 995},
    ]


def test_scores_offset_past_the_end_is_empty(ten_scores):
    assert ten_scores.board("?offset=50&limit=5") == []


@pytest.mark.parametrize("query", ["?limit=abc", "?limit=-1", "?offset=-3", "?offset=1.5",
                                   "?limit=99999999999999999999999999"])
def test_scores_refuses_bad_paging(shared, query):
    assert_json_error(shared.get("/scores" + query), 400)


# ==========================================================================
# Names
# ==========================================================================

def test_name_is_normalised_to_nfc(live):
    decomposed = unicodedata.normalize("NFD", "Caf\u00e9")
    assert decomposed == "Cafe\u0301"
    assert live.post_score(decomposed, 10).status == 200
    reply = live.get(name_path("Caf\u00e9"))
    assert reply.status == 200
    assert reply.json() == {"name": "Caf\u00e9", "scores": [10]}
    assert live.board() == [{"name": "Caf\u00e9", "score": 10}]


def test_name_is_trimmed(live):
    assert live.post_score("  rutu  ", 10).status == 200
    assert live.get("/score/rutu").json() == {"name": "rutu", "scores": [10]}


def test_name_of_32_characters_is_accepted(live):
    name = "n" * 32
    assert live.post_score(name, 1).status == 200
    assert live.get(name_path(name)).json()["name"] == name


def test_name_of_33_characters_is_refused(live):
    assert_json_error(live.post_score("n" * 33, 1), 400)
    assert live.board() == []


def test_name_length_counts_characters_after_nfc_and_trim(live):
    decomposed = "e\u0301" * 32           # 64 code points, 32 characters in NFC
    assert live.post_score(decomposed, 1).status == 200
    padded = "  " + "x" * 32 + "  "
    assert live.post_score(padded, 2).status == 200
    names = {row["name"] for row in live.board()}
    assert names == {"\u00e9" * 32, "x" * 32}


def test_emoji_name_is_accepted(live):
    assert live.post_score("\U0001F996 rex", 42).status == 200
    assert live.get(name_path("\U0001F996 rex")).json() == {"name": "\U0001F996 rex", "scores": [42]}


def test_html_in_a_name_is_stored_as_text(live):
    name = "<img src=x onerror=alert(1)>"
    assert live.post_score(name, 3).status == 200
    assert live.board() == [{"name": name, "score": 3}]


def test_name_is_the_url_decoded_path_segment(live):
    assert live.post("/score/a%2Fb+c", {"score": 4}).status == 200
    assert live.get("/score/a%2Fb+c").json() == {"name": "a/b+c", "scores": [4]}


BAD_NAMES = [
    pytest.param("   ", id="only-spaces"),
    pytest.param("a\x00b", id="Cc-nul"),
    pytest.param("bell\x07", id="Cc-bel"),
    pytest.param("del\x7f", id="Cc-del"),
    pytest.param("c\x851", id="Cc-c1-nel"),
    pytest.param("line\nbreak", id="Cc-newline"),
    pytest.param("zero\u200bwidth", id="Cf-zwsp"),
    pytest.param("\u202eevil", id="Cf-rlo"),
    pytest.param("bom\ufeff", id="Cf-bom"),
    pytest.param("private\ue000", id="Co-bmp"),
    pytest.param("private\U000F0000", id="Co-plane15"),
    pytest.param("unassigned\u0378", id="Cn-unassigned"),
    pytest.param("nonchar\uffff", id="Cn-noncharacter"),
    pytest.param("n" * 33, id="33-chars"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_is_refused_with_400(shared, name):
    assert_json_error(shared.post(name_path(name), {"score": 1}), 400)
    assert shared.board() == [CANARY]


@pytest.mark.parametrize("name", [".", "..", "..."])
def test_a_name_of_only_dots_gets_the_plain_refused_name_message(shared, name):
    message = assert_json_error(shared.post("/score/" + name, {"score": 1}), 400)
    assert "dots" in message and "README" not in message
    assert assert_json_error(shared.get("/names/check?name=" + quote(name)), 400) == message
    assert shared.board() == [CANARY]


def test_name_check_answers_the_spelling_that_will_be_shown(shared):
    reply = shared.get("/names/check?name=" + quote("  Mia "))
    assert (reply.status, reply.json()) == (200, {"name": "Mia", "yours": False})


@pytest.mark.parametrize("segment", ["%FF", "%C3", "%C3%28", "%80abc", "%ED%A0%80", "%F8%88%80%80%80"],
                         ids=["ff", "truncated", "bad-continuation", "lone-continuation",
                              "Cs-surrogate", "five-byte"])
def test_invalid_utf8_percent_escapes_are_refused_with_400(shared, segment):
    assert_json_error(shared.post("/score/" + segment, {"score": 1}), 400)
    assert_json_error(shared.get("/score/" + segment), 400)
    assert shared.board() == [CANARY]


def test_names_compare_case_insensitively_and_keep_the_first_spelling(live):
    live.post_score("Rutu", 10)
    live.post_score("RUTU", 20)
    live.post_score("rutu", 30)
    assert live.get("/score/rUtU").json() == {"name": "Rutu", "scores": [30, 20, 10]}
    assert live.board() == [{"name": "Rutu", "score": s} for s in (30, 20, 10)]


def test_names_compare_by_casefold(live):
    live.post_score("Stra\u00dfe", 1)
    live.post_score("STRASSE", 2)
    assert live.get("/score/strasse").json() == {"name": "Stra\u00dfe", "scores": [2, 1]}


# ==========================================================================
# Hostile bodies and requests: each a clean 4xx with a JSON error
# ==========================================================================

HOSTILE_BODIES = [
    ("bool", b'{"score": true}'),
    ("false", b'{"score": false}'),
    ("float", b'{"score": 12.5}'),
    ("integral-float", b'{"score": 12.0}'),
    ("exponent", b'{"score": 1e3}'),
    ("string-with-sign", b'{"score": "+12"}'),
    ("string-negative", b'{"score": "-12"}'),
    ("string-with-spaces", b'{"score": " 12 "}'),
    ("string-decimal", b'{"score": "12.0"}'),
    ("string-exponent", b'{"score": "1e3"}'),
    ("string-hex", b'{"score": "0x12"}'),
    ("string-arabic-indic-digit", '{"score": "\u0664"}'.encode()),
    ("string-fullwidth-digits", '{"score": "\uff11\uff12"}'.encode()),
    ("string-empty", b'{"score": ""}'),
    ("string-nine-digits", b'{"score": "000000012"}'),
    ("string-out-of-range", b'{"score": "10000001"}'),
    ("string-newline", b'{"score": "12\n"}'),
    ("NaN", b'{"score": NaN}'),
    ("Infinity", b'{"score": Infinity}'),
    ("minus-Infinity", b'{"score": -Infinity}'),
    ("negative", b'{"score": -1}'),
    ("above-max", b'{"score": 10000001}'),
    ("huge-int", b'{"score": 1' + b"0" * 40 + b"}"),
    ("thousands-of-digits", b'{"score": ' + b"9" * 5000 + b"}"),
    ("60k-digits", b'{"score": ' + b"9" * 60000 + b"}"),
    ("null", b'{"score": null}'),
    ("array-score", b'{"score": [5]}'),
    ("object-score", b'{"score": {"value": 5}}'),
    ("array-body", b'[{"score": 5}]'),
    ("number-body", b"5"),
    ("string-body", b'"5"'),
    ("null-body", b"null"),
    ("not-json", b"score=5"),
    ("truncated-json", b'{"score": 5'),
    ("trailing-garbage", b'{"score": 5} x'),
    ("deeply-nested", b'{"score": ' + b"[" * 30000 + b"]" * 30000 + b"}"),
    ("deeply-nested-objects", b'{"a":' * 10000 + b"1" + b"}" * 10000),
    ("missing-score", b"{}"),
    ("misspelt-key", b'{"Score": 5}'),
    ("empty-body", b""),
    ("invalid-utf8", b'{"score": 5, "x": "\xff"}'),
]


@pytest.mark.parametrize("body", [b for _, b in HOSTILE_BODIES], ids=[i for i, _ in HOSTILE_BODIES])
def test_hostile_score_body_is_a_clean_400(shared, body):
    reply = shared.post("/score/hostile", body, headers={"Content-Type": "application/json"})
    assert_json_error(reply, 400)
    assert shared.get("/score/hostile").status == 404
    assert shared.get("/health-check").status == 200


@pytest.mark.parametrize("text, kept", [("44", 44), ("0", 0), ("00000007", 7), ("10000000", 10_000_000)])
def test_score_sent_as_a_string_of_digits_is_kept(live, text, kept):
    """The first design's page posts {"score": "44"} from a form field and never reads the answer."""
    reply = live.post("/score/seedpage", json.dumps({"score": text}).encode(),
                      headers={"Content-Type": "application/json"})
    assert (reply.status, reply.json()) == (200, {"status": "success"})
    assert live.scores_of("seedpage") == [kept]


def test_score_type_error_says_what_was_wrong(live):
    message = assert_json_error(live.post("/score/typed", '{"score": "12.5"}'), 400)
    assert "score" in message.lower()
    message = assert_json_error(live.post("/score/typed", '{"score": 10000001}'), 400)
    assert "10" in message  # names the allowed range


def test_post_without_content_length_is_refused(live):
    conn = RawConnection(live.port)
    try:
        conn.send(b"POST /score/nolen HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n")
        assert_json_error(conn.response(), (400, 411))
    finally:
        conn.close()
    assert live.get("/score/nolen").status == 404


def send_headers_then_body(port, head, body, wait=2.0):
    """Send the head; send the body only if no answer came within `wait` seconds.

    A server may refuse on the headers alone; sending an unread 64 KiB body
    first could make the kernel reset the connection over the answer.
    """
    conn = RawConnection(port)
    try:
        conn.send(head)
        conn.sock.settimeout(wait)
        try:
            chunk = conn.sock.recv(65536)
            conn.buf += chunk
        except socket.timeout:
            conn.sock.settimeout(5)
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass
        conn.sock.settimeout(5)
        return conn.response()
    finally:
        conn.close()


def test_body_over_64_kib_is_413(live):
    body = b'{"game_id": "random"}' + b" " * (MAX_BODY_BYTES + 1 - 21)
    assert len(body) == MAX_BODY_BYTES + 1
    head = (b"POST /start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    assert_json_error(send_headers_then_body(live.port, head, body), 413)


def test_score_body_over_256_kib_is_413(live):
    """A posted run may be up to 256 KiB (two hours of play); a score body beyond that is refused unread."""
    body = b'{"score": 5}' + b" " * (MAX_RUN_BYTES + 1 - 12)
    head = (b"POST /score/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    assert_json_error(send_headers_then_body(live.port, head, body), 413)
    assert live.get("/score/big").status == 404


def test_body_of_exactly_64_kib_is_accepted(live):
    body = b'{"score": 5}' + b" " * (MAX_BODY_BYTES - 12)
    assert len(body) == MAX_BODY_BYTES
    reply = live.post("/score/roomy", body, headers={"Content-Type": "application/json"})
    assert reply.status == 200, reply
    assert live.scores_of("roomy") == [5]


def test_chunked_request_body_is_refused_with_4xx(live):
    body = b'c\r\n{"score": 5}\r\n0\r\n\r\n'
    head = (b"POST /score/chunky HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    assert_json_error(send_headers_then_body(live.port, head, body), (400, 499))
    assert live.get("/score/chunky").status == 404


@pytest.mark.parametrize("value", ["abc", "-1", "+12", "1e1", "0x0c", "12, 12", "", "12abc"])
def test_bad_content_length_is_400(shared, value):
    request = (b"POST /score/cl HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + value.encode() + b"\r\n\r\n")
    assert_json_error(raw_exchange(shared.port, request + b'{"score": 5}'), 400)
    assert shared.get("/score/cl").status == 404


def test_duplicate_conflicting_content_length_is_400(live):
    request = (b"POST /score/cl2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 12\r\nContent-Length: 13\r\n\r\n" + b'{"score": 5} ')
    assert_json_error(raw_exchange(live.port, request), 400)
    assert live.get("/score/cl2").status == 404


def test_unread_body_does_not_become_the_next_request(live):
    # A 405 leaves the body unread; it must not be parsed as a second request.
    smuggled = b"GET /nope-smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    conn = RawConnection(live.port)
    try:
        conn.send(b"PUT /health-check HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
                  + smuggled + b"GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n")
        first = conn.response()
        assert first.status == 405
        try:
            second = conn.response()
        except (EOFError, ConnectionResetError):
            return  # closing the connection is the other correct answer
        assert second.status == 200, second
        assert second.json() == {"status": "ok"}
    finally:
        conn.close()


# ==========================================================================
# Methods, unknown paths, http.server's own errors
# ==========================================================================

@pytest.mark.parametrize("path", ["/health-check", "/scores", "/score/rutu", "/scores?limit=1"])
def test_head_answers_like_get_without_a_body(live, path):
    live.post_score("rutu", 5)
    got = live.get(path)
    conn = RawConnection(live.port)
    try:
        conn.send(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /health-check HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = conn.response(head=True)
        after = conn.response()
    finally:
        conn.close()
    assert head.status == got.status == 200
    assert int(head.headers["Content-Length"]) == len(got.body)
    assert head.headers["Content-Type"] == got.headers["Content-Type"]
    # no body bytes were sent after the HEAD answer: the next answer parses cleanly
    assert after.status == 200 and after.json() == {"status": "ok"}


def test_head_on_an_unknown_player_is_404(live):
    assert live.call("HEAD", "/score/nobody").status == 404


def test_head_on_the_game_page_works(live):
    expected = page_bytes("dino.html")
    reply = live.call("HEAD", "/")
    assert reply.status == 200
    assert reply.body == b""
    assert int(reply.headers["Content-Length"]) == len(expected)


def allowed(reply):
    return {m.strip() for m in reply.headers.get("Allow", "").split(",") if m.strip()}


@pytest.mark.parametrize("method,path,expected", [
    ("POST", "/health-check", {"GET", "HEAD"}),
    ("PUT", "/health-check", {"GET", "HEAD"}),
    ("DELETE", "/score/rutu", {"GET", "HEAD", "POST"}),
    ("PUT", "/score/rutu", {"GET", "HEAD", "POST"}),
    ("POST", "/scores", {"GET", "HEAD"}),
    ("PATCH", "/scores", {"GET", "HEAD"}),
    ("GET", "/create/rutu", {"POST"}),
    ("GET", "/start", {"POST"}),
    ("GET", "/move", {"POST"}),
    ("DELETE", "/games", {"GET", "HEAD"}),
    ("POST", "/allmetrics", {"GET", "HEAD"}),
])
def test_known_path_with_another_method_is_405_with_allow(shared, method, path, expected):
    reply = shared.call(method, path)
    assert_json_error(reply, 405)
    assert expected <= allowed(reply), reply
    assert method not in allowed(reply)


@pytest.mark.parametrize("path", ["/nope", "/score", "/score/", "/scores/rutu", "/score/a/b",
                                  "/health-check/x", "/index.html"])
def test_unknown_path_is_404(shared, path):
    reply = shared.get(path)
    assert_json_error(reply, (400, 404))
    if path not in ("/score/",):
        assert reply.status == 404


def test_malformed_request_line_is_a_json_400(live):
    assert_json_error(raw_exchange(live.port, b"THIS IS NOT HTTP AT ALL\r\n\r\n"), 400)


def test_request_line_with_bad_version_is_a_json_400(live):
    assert_json_error(raw_exchange(live.port, b"GET / HTTP/one\r\n\r\n"), 400)


def test_url_over_65536_bytes_is_a_json_414(live):
    # exactly 65,537 bytes and no newline: the server reads them all, nothing is left unread
    line = b"GET /" + b"a" * (65537 - 5)
    assert_json_error(raw_exchange(live.port, line), 414)


def test_too_many_headers_is_a_json_431(live):
    request = b"GET /health-check HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    assert_json_error(raw_exchange(live.port, request), 431)


def test_header_line_over_64_kib_is_a_json_431(live):
    request = b"GET /health-check HTTP/1.1\r\n" + b"X-Long: " + b"a" * (65537 - 8)
    assert_json_error(raw_exchange(live.port, request), 431)


@pytest.mark.parametrize("request_bytes, why", [
    (b"GET /health-check HTTP/1.1\r\nHost : x\r\n\r\n", "white space before the colon"),
    (b"GET /health-check HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", "NUL in a value"),
    (b"GET /health-check HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", "CR in a value"),
    (b"GET /health-check HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", "obs-fold"),
    (b"GET /score/r\xc3\xbctu HTTP/1.1\r\nHost: x\r\n\r\n", "non-ASCII byte in the target"),
    (b"GET /health-check HTTP/1.1\r\n: x\r\n\r\n", "empty header name"),
    (b"GET  /health-check HTTP/1.1\r\nHost: x\r\n\r\n", "two spaces in the request line"),
], ids=["space-before-colon", "nul", "cr", "obs-fold", "non-ascii-target", "empty-name", "double-space"])
def test_malformed_header_or_target_is_a_json_400(live, request_bytes, why):
    assert_json_error(raw_exchange(live.port, request_bytes), 400)
    assert live.get("/health-check").status == 200


def test_ninety_headers_of_700_bytes_are_a_json_431(live):
    request = b"GET /health-check HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 700) for i in range(90))
    assert_json_error(raw_exchange(live.port, request + b"\r\n"), 431)


def test_one_header_of_20_kb_is_a_json_431(live):
    request = b"GET /health-check HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert_json_error(raw_exchange(live.port, request), 431)


def test_header_block_just_under_16_kib_is_accepted(live):
    filler = b"X-Fill: " + b"a" * (16 * 1024 - 200) + b"\r\n"
    reply = raw_exchange(live.port, b"GET /health-check HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n")
    assert reply.status == 200


def test_header_names_match_in_any_case(live):
    reply = raw_exchange(live.port, b"POST /score/cased HTTP/1.1\r\nhOST: x\r\ncONTENT-lENGTH: 12\r\n\r\n"
                                    b'{"score": 3}')
    assert reply.status == 200
    assert live.scores_of("cased") == [3]


def test_unknown_method_is_a_json_501(live):
    assert_json_error(raw_exchange(live.port, b"BREW /health-check HTTP/1.1\r\nHost: x\r\n\r\n"), 501)


def test_server_keeps_serving_after_protocol_errors(live):
    raw_exchange(live.port, b"THIS IS NOT HTTP AT ALL\r\n\r\n")
    raw_exchange(live.port, b"BREW / HTTP/1.1\r\n\r\n")
    assert live.get("/health-check").json() == {"status": "ok"}


# ==========================================================================
# Security headers and the static allow-list
# ==========================================================================

@pytest.mark.parametrize("path", ["/health-check", "/scores", "/score/nobody", "/nope", "/games"])
def test_api_answers_are_nosniff_and_not_cached(shared, path):
    reply = shared.get(path)
    assert reply.headers.get("X-Content-Type-Options") == "nosniff", reply
    assert "no-store" in reply.headers.get("Cache-Control", ""), reply


def test_protocol_errors_carry_nosniff(live):
    reply = raw_exchange(live.port, b"THIS IS NOT HTTP AT ALL\r\n\r\n")
    assert reply.headers.get("X-Content-Type-Options") == "nosniff", reply


@pytest.mark.parametrize("path,page", [("/", "dino.html"), ("/user", "user.html")])
def test_html_pages_carry_a_strict_content_security_policy(live, path, page):
    page_bytes(page)
    reply = live.get(path)
    csp = reply.headers.get("Content-Security-Policy", "")
    assert "default-src 'none'" in csp, csp
    assert "frame-ancestors 'none'" in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert reply.headers.get("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("path,page", [("/", "dino.html"), ("/user", "user.html")])
def test_csp_allows_each_inline_script_and_style_by_hash(live, path, page):
    text = page_bytes(page).decode()
    csp = live.get(path).headers.get("Content-Security-Policy", "")
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        allowed_here = re.search(directive + r" ([^;]*)", csp)
        # A script loaded by src= comes from 'self'; only inline ones need a hash.
        for element in re.findall(rf"<{tag}\b(?![^>]*\bsrc=)[^>]*>(.*?)</{tag}>", text, re.S | re.I):
            digest = base64.b64encode(hashlib.sha256(element.encode()).digest()).decode()
            assert allowed_here and f"'sha256-{digest}'" in allowed_here.group(1), (tag, element[:80], csp)


TRAVERSALS = [
    "/../server.py", "/game/../server.py", "/%2e%2e/server.py", "/%2E%2E%2Fserver.py",
    "/..%2fserver.py", "/game/%2e%2e/server.py", "/game/dino.html", "/game/user.html",
    "/game/", "/game", "/data/state.json", "/data/journal.jsonl", "/state.json",
    "/journal.jsonl", "/server.py", "/test_server.py", "/.git/config", "//etc/passwd",
    "/../../../../etc/passwd", "/user/../server.py", "/favicon.svg/../server.py",
    "/%00", "/game%2fdino.html", "/dino.html", "/user.html", "/./server.py",
    "/static/../../server.py", "/score/../server.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_attempts_never_serve_files(shared, path):
    reply = raw_exchange(shared.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert 400 <= reply.status < 500, reply
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply
    for secret in (b"canary-player", b"import ", b"root:", b"[core]", b"def "):
        assert secret not in reply.body, (path, reply)


def test_favicon_is_served_from_the_allow_list(live):
    expected = page_bytes("favicon.svg")
    for path in ("/favicon.svg", "/favicon.ico"):
        reply = live.get(path)
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("image/svg+xml")
        assert reply.body == expected


# ==========================================================================
# HTTP connections: keep-alive, backlog, no reverse DNS
# ==========================================================================

def test_two_requests_share_one_keep_alive_connection(live):
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=5)
    try:
        conn.request("POST", "/score/kept", body=b'{"score": 7}', headers={"Content-Type": "application/json"})
        first = conn.getresponse()
        first_body = first.read()
        sock = conn.sock
        assert first.version == 11 and not first.will_close
        conn.request("GET", "/score/kept")
        second = conn.getresponse()
        second_body = second.read()
        assert conn.sock is sock, "the server closed the connection between requests"
    finally:
        conn.close()
    assert int(first.getheader("Content-Length")) == len(first_body)
    assert int(second.getheader("Content-Length")) == len(second_body)
    assert json.loads(second_body) == {"name": "kept", "scores": [7]}


def test_pipelined_requests_are_answered_in_order_with_exact_lengths(live):
    live.post_score("pipe", 3)
    conn = RawConnection(live.port)
    try:
        conn.send(b"GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /score/pipe HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [conn.response() for _ in range(3)]
    finally:
        conn.close()
    assert [a.status for a in answers] == [200, 200, 404]
    assert answers[0].json() == {"status": "ok"}
    assert answers[1].json() == {"name": "pipe", "scores": [3]}


def test_listen_backlog_is_at_least_128(live):
    assert live.srv.request_queue_size >= 128


def test_binding_does_no_reverse_dns_lookup(srvmod, tmp_path, monkeypatch):
    def no_lookup(*args, **kwargs):
        raise AssertionError("reverse DNS lookup at bind")
    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    monkeypatch.setattr(socket, "gethostbyaddr", no_lookup)
    live = Live(srvmod, tmp_path / "data")
    try:
        assert live.get("/health-check").status == 200
    finally:
        live.close()


# ==========================================================================
# Slow and half-open clients
# ==========================================================================

def test_sixty_stalled_clients_do_not_block_others(live):
    stalled = []
    try:
        for i in range(60):
            # Three addresses, so no one client passes its own connection share.
            s = socket.create_connection(("127.0.0.1", live.port), timeout=5,
                                         source_address=(f"127.0.0.{2 + i % 3}", 0))
            if i % 2:
                s.sendall(b"GET /health-check HTTP/1.1\r\nHo")       # half a head
            else:
                s.sendall(b"POST /score/slow HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"sc")  # half a body
            stalled.append(s)
        started = time.monotonic()
        reply = live.get("/health-check", timeout=10)
        assert reply.status == 200
        assert live.post_score("fast", 1).status == 200
        assert time.monotonic() - started < 10
    finally:
        for s in stalled:
            s.close()


def test_stalled_client_is_cut_off_after_the_request_deadline(srvmod, live, monkeypatch):
    monkeypatch.setattr(srvmod, "REQUEST_DEADLINE_S", 1)
    conn = RawConnection(live.port)
    try:
        conn.send(b"GET /health-check HTTP/1.1\r\nHo")
        assert conn.closed_by_server(timeout=8)
    finally:
        conn.close()
    assert live.get("/health-check").status == 200


def test_request_cut_off_by_the_deadline_is_not_acted_on(srvmod, live, monkeypatch):
    # Headers that stop mid-way must not be taken for a whole request once cut off.
    monkeypatch.setattr(srvmod, "REQUEST_DEADLINE_S", 1)
    conn = RawConnection(live.port)
    try:
        conn.send(b"GET /health-check HTTP/1.1\r\nHost: x\r\n")
        assert conn.closed_by_server(timeout=8)
    finally:
        conn.close()
    assert b"200 OK" not in conn.buf


def test_trickling_client_is_cut_off_after_the_request_deadline(srvmod, live, monkeypatch):
    monkeypatch.setattr(srvmod, "REQUEST_DEADLINE_S", 1)
    conn = RawConnection(live.port)
    cut_off = False
    try:
        for byte in b"GET /health-check HTTP/1.1\r\nX-Slow: " + b"a" * 200:
            try:
                conn.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
                break
            if conn.closed_by_server(timeout=0.1):
                cut_off = True
                break
    finally:
        conn.close()
    assert cut_off, "a client sending one byte every 0.1 s for 20 s was never cut off"


def test_idle_keep_alive_connection_then_a_prompt_request_is_answered(srvmod, live, monkeypatch):
    # The deadline runs from a request's first byte, not from when the connection went quiet.
    monkeypatch.setattr(srvmod, "REQUEST_DEADLINE_S", 1)
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=5)
    try:
        conn.request("GET", "/health-check")
        assert conn.getresponse().read()
        time.sleep(1.5)  # idle past the deadline, well within the idle timeout
        conn.request("GET", "/health-check")
        reply = conn.getresponse()
        assert (reply.status, reply.read()) == (200, b'{"status": "ok"}')
    finally:
        conn.close()


def test_idle_keep_alive_connection_is_closed_quietly_after_the_idle_timeout(srvmod, live, monkeypatch):
    monkeypatch.setattr(srvmod, "SOCKET_TIMEOUT_S", 1)
    conn = RawConnection(live.port)
    try:
        conn.send(b"GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response().status == 200
        assert conn.closed_by_server(timeout=5)
        assert conn.buf == b"", conn.buf  # no 408 for a request that was never sent
    finally:
        conn.close()


def test_connections_beyond_the_cap_get_a_json_503(live):
    live.srv.max_connections = 4
    held = [RawConnection(live.port) for _ in range(4)]
    try:
        for conn in held:
            conn.send(b"GET /health-check HTTP/1.1\r\nHo")
        time.sleep(0.3)
        assert_json_error(raw_exchange(live.port, b"GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n"), 503)
    finally:
        for conn in held:
            conn.close()
    deadline = time.monotonic() + 5
    while live.get("/health-check").status != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.get("/health-check").status == 200


def test_an_idle_keep_alive_connection_gives_its_slot_to_a_new_one(live):
    live.srv.max_connections = 2
    idle = [RawConnection(live.port) for _ in range(2)]
    try:
        for conn in idle:
            conn.send(b"GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.response().status == 200          # now idle, kept alive
        reply = raw_exchange(live.port, b"GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.status == 200
        assert sum(conn.closed_by_server(timeout=5) for conn in idle) == 1   # the longest idle gave way
    finally:
        for conn in idle:
            conn.close()


def test_a_connection_at_the_cap_waits_for_a_slot_instead_of_a_503(live):
    live.srv.max_connections = 1
    busy = RawConnection(live.port)
    try:
        busy.send(b"GET /health-check HTTP/1.1\r\nHo")      # mid-request: not idle, its slot is taken
        time.sleep(0.3)
        waiting = RawConnection(live.port)
        waiting.send(b"GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        busy.send(b"st: x\r\nConnection: close\r\n\r\n")   # the first request ends and frees the slot
        assert busy.response().status == 200
        assert waiting.response().status == 200
        waiting.close()
    finally:
        busy.close()


# ==========================================================================
# Persistence: restart, kill -9, torn and corrupt files, full disk
# ==========================================================================

def test_restart_keeps_every_score_name_and_order(start, tmp_path):
    first = start()
    for score in (10, 20, 30, 40, 50, 60):
        first.post_score("Keeper", score)
    first.post_score("KEEPER", 45)
    first.post_score("Caf\u00e9", 45)
    first.post_score("other", 50)
    board = first.board()
    first.close()
    second = start(tmp_path / "data")
    assert second.board() == board
    assert second.get("/score/keeper").json() == {"name": "Keeper", "scores": [60, 50, 45, 40, 30]}
    second.post_score("late", 1)
    second.close()
    third = start(tmp_path / "data")
    assert third.board() == board + [{"name": "late", "score": 1}]


def test_every_data_json_file_is_valid_json(start, tmp_path):
    live = start()
    live.post_score("valid", 1)
    token = live.create("valid")
    live.ok("POST", "/start", token, game_id="tictactoe")
    for path in (tmp_path / "data").glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
    live.close()
    files = list((tmp_path / "data").glob("*.json"))
    assert files, "no snapshot written at shutdown"
    for path in files:
        json.loads(path.read_text(encoding="utf-8"))


def posting_thread(port, tag, acked, stop):
    """Post one fresh player per request (so top-5 trimming never hides one), record 200s."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    i = 0
    while not stop.is_set():
        name, score = f"k{tag}-{i}", tag * 100000 + i
        try:
            conn.request("POST", f"/score/{name}", body=json.dumps({"score": score}),
                         headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            reply.read()
        except (OSError, http.client.HTTPException):
            return
        if reply.status == 200:
            acked.append((name, score))
        i += 1


def test_kill_9_under_concurrent_writes_loses_no_acknowledged_score(spawn, tmp_path):
    data = tmp_path / "data"
    proc = spawn(data, "--client-limits", "off")
    acked, stop = [], threading.Event()
    threads = [threading.Thread(target=posting_thread, args=(proc.port, t, acked, stop)) for t in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill9()                     # while the threads are still posting
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) >= 20, "too few writes acknowledged before the kill"
    for path in data.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
    again = spawn(data)
    rows = again.call("GET", "/scores").json()
    kept = {(row["name"], row["score"]) for row in rows}
    missing = [pair for pair in acked if pair not in kept]
    assert not missing, f"{len(missing)} acknowledged scores lost, e.g. {missing[:5]}"
    for name, score in kept:  # nothing invented: every row is a score some thread sent
        tag, i = map(int, name[1:].split("-"))
        assert score == tag * 100000 + i


@pytest.fixture(scope="module")
def killed_journal(tmp_path_factory):
    """A data dir left by kill -9 after four acknowledged scores j1..j4, posted in order."""
    work = tmp_path_factory.mktemp("killed")
    data = work / "data"
    proc = Proc(work, data)
    try:
        proc.wait_ready()
        for i in range(1, 5):
            assert proc.call("POST", f"/score/j{i}", {"score": i * 10}).status == 200
    finally:
        proc.kill9()
    journal = data / "journal.jsonl"
    assert journal.exists(), list(data.iterdir())
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 4, lines
    return data


def copy_data(src, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


FIRST_DESIGN_PAGE = "<!doctype html><title>dino</title><canvas></canvas>"  # the first design's game/dino.html


class OtherPage(Proc):
    """server.py run from a copy of the project whose game/dino.html is another page."""

    def __init__(self, workdir, page_html, *args):
        self.root = Path(workdir) / "app"
        shutil.copytree(SERVER_PY.parent / "game", self.root / "game")
        shutil.copy2(SERVER_PY, self.root / "server.py")
        (self.root / "game" / "dino.html").write_text(page_html, encoding="utf-8")
        super().__init__(workdir, Path(workdir) / "data", *args, quiet=None)

    def command(self):
        return [sys.executable, str(self.root / "server.py"), *super().command()[2:]]


def test_a_game_page_without_rules_is_served_and_plain_posts_count(tmp_path):
    # game/engine.js and its rules are still in the copy: a page that does not load them plays by others.
    proc = OtherPage(tmp_path, FIRST_DESIGN_PAGE).wait_ready()
    try:
        assert "runs cannot be verified with this page" in proc.stdout()
        assert proc.call("GET", "/").body.decode() == FIRST_DESIGN_PAGE
        assert proc.call("POST", "/score/Ann", {"score": 12}).json() == {"status": "success"}
        assert [(row["name"], row["best"]) for row in proc.call("GET", "/players").json()] == [("Ann", 12)]
        message = proc.call("POST", "/runs").json()["error"]
        assert message.startswith("this server's game page has no rules block")
    finally:
        proc.stop()


def test_kill_9_leaves_every_json_file_valid(killed_journal):
    files = sorted(path.name for path in killed_journal.glob("*.json*"))
    assert files == ["journal.jsonl", "runs.jsonl", "teacher.json"], files  # before its first compaction
    ops = [json.loads(line)["op"] for line in (killed_journal / "journal.jsonl").read_bytes().splitlines()]
    assert ops[0] == "first start" and set(ops[1:]) == {"score"}


# server.py with its snapshot write stuck halfway: the compaction thread writes half of
# state.json.tmp, leaves a mark, and waits for ever, so the test can kill the server there.
STUCK_COMPACTION = """
import sys, threading
sys.path.insert(0, sys.argv[1])
import server
real, mark = server.write_file_atomically, sys.argv[2]

def stuck(path, data, **options):
    if not path.endswith("state.json"):
        return real(path, data, **options)
    with open(path + ".tmp", "wb") as half:
        half.write(data[:len(data) // 2])
    open(mark, "w").close()
    threading.Event().wait()

server.write_file_atomically = stuck
server.COMPACT_MIN_BYTES = 0  # compact at the first write: the journal is bigger than no snapshot
sys.exit(server.main(sys.argv[3:]))
"""


class StuckCompaction(Proc):
    """A server whose first compaction stops halfway through writing the snapshot; ``stuck`` is its mark."""

    def command(self):
        self.stuck = self.workdir / "snapshot-half-written"
        return [sys.executable, "-c", STUCK_COMPACTION, str(REPO), str(self.stuck), "--host", "127.0.0.1",
                "--port", str(self.port), "--data", str(self.data_dir), *self.args]


@pytest.fixture(scope="module")
def killed_in_compaction(tmp_path_factory):
    """A data dir whose server was killed -9 with a snapshot half written, and the scores it acknowledged."""
    work = tmp_path_factory.mktemp("compaction")
    proc = StuckCompaction(work, work / "data", "--client-limits", "off").wait_ready()
    acked = []
    for i in range(1, 31):  # the first write starts the compaction; the rest land while it is stuck
        if proc.call("POST", f"/score/k{i}", {"score": 5000 + i}).status == 200:
            acked.append((f"k{i}", 5000 + i))
        if i == 1:
            deadline = time.monotonic() + 10
            while not proc.stuck.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
    stuck = proc.stuck.exists()
    proc.kill9()
    return work / "data", stuck, acked


def test_kill_9_during_compaction_leaves_every_json_file_valid(killed_in_compaction):
    data, stuck, acked = killed_in_compaction
    assert stuck, "the compaction never reached the snapshot write"
    assert (data / "state.json.tmp").stat().st_size > 0  # the kill came halfway through it
    assert not (data / "state.json").exists() or json.loads((data / "state.json").read_bytes())
    journal = (data / "journal.jsonl").read_bytes().splitlines()
    assert len(journal) >= len(acked) == 30  # nothing was cut from the journal before the snapshot was in
    for line in journal:
        assert json.loads(line)["seq"] > 0


def test_kill_9_during_compaction_keeps_every_acknowledged_score(killed_in_compaction, tmp_path, start):
    data, _, acked = killed_in_compaction
    live = start(copy_data(data, tmp_path))
    board = {(row["name"], row["score"]) for row in live.board()}
    assert acked and set(acked) <= board


def test_kill_9_keeps_the_acknowledged_scores(killed_journal, tmp_path, start):
    live = start(copy_data(killed_journal, tmp_path))
    assert live.board() == [{"name": f"j{i}", "score": i * 10} for i in (4, 3, 2, 1)]


def tear_last_line(data):
    journal = data / "journal.jsonl"
    raw = journal.read_bytes()
    lines = raw.splitlines(keepends=True)
    last = lines[-1]
    journal.write_bytes(b"".join(lines[:-1]) + last[: len(last) // 2])


def test_torn_last_journal_line_is_dropped_with_a_log_line(killed_journal, tmp_path, spawn):
    data = copy_data(killed_journal, tmp_path)
    tear_last_line(data)
    proc = spawn(data)
    rows = proc.call("GET", "/scores").json()
    assert rows == [{"name": f"j{i}", "score": i * 10} for i in (3, 2, 1)]
    assert "journal" in proc.output().lower(), proc.output()


def test_writes_after_a_torn_line_survive_a_later_kill_9(killed_journal, tmp_path, spawn):
    data = copy_data(killed_journal, tmp_path)
    tear_last_line(data)
    proc = spawn(data)
    assert proc.call("POST", "/score/j5", {"score": 50}).status == 200
    proc.kill9()                      # no compaction: the next start replays the journal
    again = spawn(data)
    assert [row["name"] for row in again.call("GET", "/scores").json()] == ["j5", "j3", "j2", "j1"]


def test_corruption_in_the_middle_of_the_journal_refuses_to_start(killed_journal, tmp_path):
    data = copy_data(killed_journal, tmp_path)
    journal = data / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[1] = b"#garbage{not json at all\n"
    journal.write_bytes(b"".join(lines))
    before = file_bytes(data)
    result = run_to_the_end(tmp_path, "--host", "127.0.0.1", "--port", free_port(), "--data", data, "--quiet")
    assert_one_line_startup_error(result, "journal.jsonl")
    assert_files_untouched(data, before)


CORRUPT_SNAPSHOTS = [
    pytest.param(b'{"players": {"a": [1, 2', id="truncated"),
    pytest.param(b"\x00\xff\xfe garbage", id="binary-garbage"),
    pytest.param(b"[1, 2, 3]", id="wrong-shape"),
    pytest.param(b"", id="empty-file"),
]


@pytest.mark.parametrize("content", CORRUPT_SNAPSHOTS)
def test_corrupt_snapshot_refuses_to_start_and_is_left_untouched(srvmod, tmp_path, content):
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.json").write_bytes(content)
    before = file_bytes(data)
    with pytest.raises(srvmod.StartupError) as refused:
        Live(srvmod, data)
    assert "state.json" in str(refused.value)
    assert_files_untouched(data, before)


def test_corrupt_snapshot_is_a_one_line_error_from_the_command_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.json").write_bytes(b'{"players": {"a": [1, 2')
    before = file_bytes(data)
    result = run_to_the_end(tmp_path, "--host", "127.0.0.1", "--port", free_port(), "--data", data, "--quiet")
    assert_one_line_startup_error(result, "state.json")
    assert_files_untouched(data, before)


def test_truncated_real_snapshot_refuses_to_start_in_process(start, srvmod, tmp_path):
    live = start()
    live.post_score("snap", 1)
    live.close()
    snapshot = tmp_path / "data" / "state.json"
    raw = snapshot.read_bytes()
    snapshot.write_bytes(raw[: len(raw) // 2])
    before = file_bytes(tmp_path / "data")
    with pytest.raises(srvmod.StartupError) as refused:
        Live(srvmod, tmp_path / "data")
    assert "state.json" in str(refused.value)
    assert_files_untouched(tmp_path / "data", before)


@pytest.fixture
def full_disk(srvmod, monkeypatch):
    """Call full_disk(True) to make every fsync fail with ENOSPC, full_disk(False) to heal."""
    real_fsync = os.fsync

    def enospc(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    def set_full(full):
        monkeypatch.setattr(srvmod.os, "fsync", enospc if full else real_fsync)
    return set_full


def test_failing_disk_write_answers_503(live, full_disk):
    live.post_score("disk", 100)
    full_disk(True)
    assert_json_error(live.post_score("disk", 200), 503)


def test_failing_disk_write_leaves_memory_unchanged(live, full_disk):
    live.post_score("disk", 100)
    full_disk(True)
    live.post_score("disk", 200)
    live.post_score("newcomer", 300)
    assert live.get("/score/disk").json() == {"name": "disk", "scores": [100]}
    assert live.get("/score/newcomer").status == 404
    assert live.board() == [{"name": "disk", "score": 100}]
    assert live.get("/health-check").status == 200


def crash_copy(live, tmp_path):
    """The data directory as a crash would leave it now: a copy taken while the server runs."""
    copy = tmp_path / f"crash-{time.monotonic_ns()}"
    shutil.copytree(live.data_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def test_failed_write_leaves_no_phantom_score_after_a_crash(start, full_disk, tmp_path):
    live = start()
    live.post_score("disk", 100)
    full_disk(True)
    live.post_score("disk", 200)
    live.post_score("newcomer", 300)
    full_disk(False)
    assert start(crash_copy(live, tmp_path)).board() == [{"name": "disk", "score": 100}]


def test_failed_write_leaves_no_phantom_score_after_restart(start, full_disk, tmp_path):
    live = start()
    live.post_score("disk", 100)
    full_disk(True)
    live.post_score("disk", 200)
    full_disk(False)
    live.close()
    assert start(tmp_path / "data").board() == [{"name": "disk", "score": 100}]


def test_writes_work_again_once_the_disk_is_fine(start, full_disk, tmp_path):
    live = start()
    live.post_score("disk", 100)
    full_disk(True)
    live.post_score("disk", 200)
    full_disk(False)
    assert live.post_score("disk", 150).status == 200
    assert live.scores_of("disk") == [150, 100]
    live.close()
    again = start(tmp_path / "data")
    assert again.board() == [{"name": "disk", "score": 150}, {"name": "disk", "score": 100}]


def test_sixteen_threads_posting_at_once_end_with_exact_results(unlimited):
    live = unlimited
    barrier = threading.Barrier(16)
    failures = []

    def player(t):
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
        barrier.wait()
        for i in range(15):
            for name in (f"own{t}", "crowd"):
                conn.request("POST", f"/score/{name}", body=json.dumps({"score": t * 100 + i}),
                             headers={"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                if reply.status != 200:
                    failures.append(reply.status)
        conn.close()

    threads = [threading.Thread(target=player, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == []
    for t in range(16):
        assert live.scores_of(f"own{t}") == [t * 100 + i for i in (14, 13, 12, 11, 10)]
    assert live.scores_of("crowd") == [1514, 1513, 1512, 1511, 1510]
    assert len(live.board()) == 16 * 5 + 5


def test_concurrent_writes_share_fsyncs(unlimited, srvmod, monkeypatch):
    live = unlimited
    real_fsync, calls = os.fsync, []

    def slow_fsync(fd):  # a slow disk: 20 ms a flush, so concurrent posts queue up behind one
        calls.append(fd)
        time.sleep(0.02)
        real_fsync(fd)
    monkeypatch.setattr(srvmod.os, "fsync", slow_fsync)
    barrier, statuses = threading.Barrier(16), []

    def poster(t):
        barrier.wait()
        for i in range(5):
            statuses.append(live.post_score(f"group{t}", i).status)
    threads = [threading.Thread(target=poster, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 80
    assert len(calls) <= 40, f"{len(calls)} fsyncs for 80 concurrent posts"


# ==========================================================================
# The process: signals, port in use, --help, banner, access log
# ==========================================================================

def open_idle_stalled_and_streaming_clients(port):
    """An idle keep-alive connection, a half-sent request and an open /events stream."""
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle.request("GET", "/health-check")
    idle.getresponse().read()
    stalled = socket.create_connection(("127.0.0.1", port), timeout=5)
    stalled.sendall(b"POST /score/stall HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"sco")
    stream = RawConnection(port)
    stream.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    stream._fill()
    return idle, stalled, stream.sock


def send_stop(proc, how):
    """Stop a server as a user or a service manager would: "SIGTERM" (Unix) or "Ctrl-C" (every platform)."""
    if how == "SIGTERM":
        proc.p.send_signal(signal.SIGTERM)
    else:
        proc.ctrl_c()


STOPS = [pytest.param("SIGTERM", marks=unix_only("Windows has no SIGTERM to send; TerminateProcess is a kill")),
         "Ctrl-C"]


@pytest.mark.parametrize("how", STOPS)
def test_a_stop_signal_ends_the_server_with_exit_0_though_clients_hold_connections(spawn, tmp_path, how):
    """Idle, stalled and streaming clients never keep the server from stopping (how fast is the bench's business)."""
    proc = spawn(tmp_path / "data")
    proc.call("POST", "/score/bye", {"score": 1})
    clients = open_idle_stalled_and_streaming_clients(proc.port)
    try:
        send_stop(proc, how)
        try:
            code = proc.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("server still running 30 s after the signal: a client held it")
    finally:
        for client in clients:
            client.close()
    assert code == 0, proc.output()
    assert "Traceback" not in proc.output()


@pytest.mark.parametrize("how", STOPS)
def test_signal_compacts_the_journal_and_keeps_every_score(spawn, start, tmp_path, how):
    data = tmp_path / "data"
    proc = spawn(data)
    for i in range(5):
        assert proc.call("POST", f"/score/compact{i}", {"score": i}).status == 200
    send_stop(proc, how)
    assert proc.p.wait(timeout=5) == 0
    journal = data / "journal.jsonl"
    assert not journal.exists() or journal.stat().st_size == 0, journal.read_bytes()[:200]
    snapshot = json.loads((data / "state.json").read_text(encoding="utf-8"))
    assert "compact4" in json.dumps(snapshot)
    live = start(data)
    assert [row["name"] for row in live.board()] == [f"compact{i}" for i in (4, 3, 2, 1, 0)]


def test_request_in_flight_at_ctrl_c_is_answered_and_kept(spawn, start, tmp_path):
    data = tmp_path / "data"
    proc = spawn(data)
    conn = RawConnection(proc.port)
    body = b'{"score": 77}'
    conn.send(b"POST /score/inflight HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
    time.sleep(0.1)
    proc.ctrl_c()
    time.sleep(0.3)
    try:
        conn.send(body[5:])
        reply = conn.response()
    finally:
        conn.close()
    assert reply.status == 200 and reply.json() == {"status": "success"}
    assert proc.p.wait(timeout=5) == 0
    assert start(data).scores_of("inflight") == [77]


def test_port_defaults_to_the_port_environment_variable(tmp_path):
    port = free_port()
    env = dict(subprocess_env(), PORT=str(port))
    proc = retry_start(lambda: subprocess.Popen(
        [sys.executable, str(SERVER_PY), "--host", "127.0.0.1", "--data", str(tmp_path / "data"), "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert call(port, "GET", "/health-check", timeout=1).status == 200
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stderr.close()


def test_posting_appends_to_the_journal_without_rewriting_the_snapshot(start, tmp_path):
    data = tmp_path / "data"
    first = start(data, client_limits=False)
    for i in range(50):
        first.post_score(f"seed{i}", i)
    first.close()
    snapshot = data / "state.json"
    before = (snapshot.stat().st_ino, snapshot.stat().st_mtime_ns, snapshot.read_bytes())
    live = start(data, client_limits=False)
    journal_size = (data / "journal.jsonl").stat().st_size if (data / "journal.jsonl").exists() else 0
    for i in range(20):
        assert live.post_score(f"new{i}", i).status == 200
    assert (snapshot.stat().st_ino, snapshot.stat().st_mtime_ns, snapshot.read_bytes()) == before
    assert (data / "journal.jsonl").stat().st_size > journal_size


def test_close_compacts_and_finishes(start, tmp_path):
    live = start()
    live.post_score("closing", 9)
    live.close()
    assert not live.thread.is_alive()
    journal = tmp_path / "data" / "journal.jsonl"
    assert not journal.exists() or journal.stat().st_size == 0


def test_port_already_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_to_the_end(tmp_path, "--host", "127.0.0.1", "--port", port,
                            "--data", tmp_path / "data", "--quiet")
    assert result.returncode != 0
    line = assert_one_line_startup_error(result)
    assert str(port) in line


def test_help_explains_every_option(tmp_path):
    result = run_to_the_end(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--data", "--quiet", "--token-ttl", "--games"):
        assert option in result.stdout, option
    for default in ("0.0.0.0", "8080", "PORT", "3600"):
        assert default in result.stdout, default


def test_banner_shows_url_data_dir_player_count_and_token_ttl(start, spawn, tmp_path):
    data = tmp_path / "data"
    live = start(data)
    for name in ("ann", "ben", "cat"):
        live.post_score(name, 1)
    live.post_score("ANN", 2)
    live.close()
    proc = spawn(data, "--token-ttl", 1234)
    deadline = time.monotonic() + 5   # the banner may land just after the first answer
    while "1234" not in proc.stdout() and time.monotonic() < deadline:
        time.sleep(0.05)
    banner = proc.stdout()
    assert f"http://127.0.0.1:{proc.port}/" in banner, banner
    assert str(data) in banner, banner
    player_lines = [line for line in banner.splitlines() if "player" in line.lower()]
    assert player_lines and re.search(r"\b3\b", " ".join(player_lines)), banner
    assert "1234" in banner, banner


def test_quiet_server_logs_no_access_lines(spawn, tmp_path):
    proc = spawn(tmp_path / "data")
    proc.call("GET", "/score/quiet-probe")
    time.sleep(0.2)
    assert "quiet-probe" not in proc.output()


@pytest.fixture(scope="module")
def logging_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("logging")
    proc = Proc(work, work / "data", quiet=False)
    proc.wait_ready()
    yield proc
    proc.stop()


def wait_for_lines(proc, needle, count, timeout=3):
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in proc.output().splitlines() if needle in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_each_request_logs_one_access_line(logging_server):
    proc = logging_server
    for _ in range(3):
        assert proc.call("GET", "/score/log-probe").status == 404
    proc.call("POST", "/score/log-probe2", {"score": 5})
    time.sleep(0.2)
    lines = wait_for_lines(proc, "/score/log-probe ", 3)
    assert len(lines) == 3, proc.output()
    for line in lines:
        assert "GET" in line and "404" in line, line
        assert re.search(r"\d+(\.\d+)?\s*ms", line), line
    posts = wait_for_lines(proc, "/score/log-probe2", 1)
    assert len(posts) == 1 and "POST" in posts[0] and "200" in posts[0], posts


def test_request_bodies_are_not_logged(logging_server):
    proc = logging_server
    proc.call("POST", "/score/body-probe", b'{"score": 5, "note": "BODY-MARKER-77"}',
              headers={"Content-Type": "application/json"})
    wait_for_lines(proc, "/score/body-probe", 1)
    assert "BODY-MARKER-77" not in proc.output()


def test_client_disconnect_mid_request_logs_no_traceback(logging_server):
    proc = logging_server
    for i in range(20):
        proc.call("POST", f"/score/disc{i}", {"score": i})
    s = socket.create_connection(("127.0.0.1", proc.port))
    s.sendall(b"POST /score/gone HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"sc")
    s.close()
    for _ in range(5):  # ask and hang up before reading, with a reset
        s = socket.create_connection(("127.0.0.1", proc.port))
        s.sendall(b"GET /scores HTTP/1.1\r\nHost: x\r\n\r\n")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    time.sleep(0.5)
    assert proc.call("GET", "/health-check").status == 200
    out = proc.output()
    for bad in ("Traceback", "BrokenPipe", "ConnectionResetError", "Exception occurred"):
        assert bad not in out, out[-2000:]


# ==========================================================================
# Game API: users and tokens
# ==========================================================================

def test_create_user_answers_201_with_token_and_expiry(live):
    before = time.time()
    reply = live.post("/create/alice")
    assert reply.status == 201, reply
    body = reply.json()
    assert set(body) - {"id"} == {"token", "user", "expires_at"}
    assert body["user"] == "alice"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", body["token"]), body["token"]
    assert before + 3600 - 5 <= body["expires_at"] <= time.time() + 3600 + 5


def test_same_name_twice_is_two_users(live):
    first, second = live.create("twin"), live.create("twin")
    assert first != second
    live.ok("POST", "/start", first, game_id="random")
    binary_search_game(live, first)
    assert metrics(live, second) == {"user": "twin", "games": {}}
    twins = [u for u in all_users(live) if u.get("user", u.get("name")) == "twin"]
    assert len(twins) == 2
    ids = [u.get("id") for u in twins]
    assert ids[0] and ids[1] and ids[0] != ids[1]
    assert sorted(u["games"].get("random", {}).get("win", 0) for u in twins) == [0, 1]


@pytest.mark.parametrize("name", ["bad\x00name", "n" * 33, "   "], ids=["Cc", "33-chars", "blank"])
def test_create_refuses_bad_usernames(shared, name):
    assert_json_error(shared.post(name_path(name, "/create/")), 400)


def test_create_refuses_invalid_utf8(live):
    assert_json_error(live.post("/create/%FF"), 400)


def test_games_lists_the_built_in_games(live):
    reply = live.get("/games")
    assert reply.status == 200
    games = reply.json()
    assert isinstance(games, list)
    ids = [g["id"] for g in games]
    for builtin in ("random", "tictactoe", "nim"):
        assert builtin in ids
    for game in games:
        assert set(game) >= {"id", "name", "description", "moves"}
        for key in ("name", "description", "moves"):
            assert isinstance(game[key], str) and game[key].strip(), game


def test_start_answers_game_state_and_zero_stats(live):
    token = live.create()
    body = live.ok("POST", "/start", token, game_id="random")
    assert set(body) >= {"game_id", "state", "stats"}
    assert body["game_id"] == "random"
    assert isinstance(body["state"], dict)
    assert body["stats"] == {"win": 0, "lose": 0, "total": 0}


def test_status_answers_state_with_null_outcome(live):
    token = live.create()
    started = live.ok("POST", "/start", token, game_id="random")
    status = live.ok("GET", "/status", token, game_id="random")
    assert status == {"game_id": "random", "state": started["state"], "outcome": None,
                      "stats": {"win": 0, "lose": 0, "total": 0}}


TOKEN_WAYS = ["bearer", "query-token", "query-user_token", "form-token", "form-user_token",
              "json-token", "json-user_token"]


def call_with_token(live, way, method, path, token, **params):
    """Send params with the token passed `way` ("bearer" or WHERE-KEY); a GET carries them in the query."""
    headers = {}
    if way == "bearer":
        headers["Authorization"] = f"Bearer {token}"
        where = "json"
    else:
        where, key = way.split("-", 1)
        params = {key: token, **params}
    if where == "query" or method == "GET":
        return live.call(method, path + "?" + urlencode(params), headers=headers)
    if where == "form":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return live.call(method, path, urlencode(params), headers=headers)
    return live.call(method, path, params, headers=headers)


@pytest.mark.parametrize("way", TOKEN_WAYS)
def test_token_is_accepted_every_documented_way(live, way):
    token = live.create()
    started = call_with_token(live, way, "POST", "/start", token, game_id="random")
    assert started.status == 200, started
    moved = call_with_token(live, way, "POST", "/move", token, game_id="random", move="50")
    assert moved.status == 200, moved
    status = call_with_token(live, way, "GET", "/status", token, game_id="random")
    assert status.status == 200, status
    if moved.json()["outcome"] is None:   # (a lucky 50 wins and starts a fresh game)
        assert status.json()["state"] == moved.json()["state"]
    counted = call_with_token(live, way, "GET", "/metrics", token)
    assert counted.status == 200, counted
    assert counted.json()["user"] == "bot"


def test_parameters_are_read_from_a_form_body(live):
    token = live.create()
    reply = live.call("POST", "/start", urlencode({"game_id": "random"}),
                      headers={"Authorization": f"Bearer {token}",
                               "Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 200 and reply.json()["game_id"] == "random"


def test_parameters_are_read_from_the_query_string_of_a_post(live):
    token = live.create()
    reply = live.call("POST", "/start?game_id=random", headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 200 and reply.json()["game_id"] == "random"


# ==========================================================================
# Game API: playing `random`
# ==========================================================================

def guesses_left(state):
    """The state's count of guesses left (the issue says the state shows it)."""
    counts = [v for k, v in state.items() if "left" in k.lower() and isinstance(v, int)]
    assert len(counts) == 1, state
    return counts[0]


def binary_search_game(live, token):
    """Play one `random` game by binary search; returns (outcome, guesses, last answer)."""
    low, high = 1, 100
    for guess_count in range(1, 8):
        guess = (low + high) // 2
        body = live.ok("POST", "/move", token, game_id="random", move=guess)
        if body["outcome"] is not None:
            return body["outcome"], guess_count, body
        if body["state"]["hint"] == "higher":
            low = guess + 1
        else:
            assert body["state"]["hint"] == "lower", body
            high = guess - 1
    return None, 7, body


def test_binary_search_always_wins_random(live):
    token = live.create("searcher")
    live.ok("POST", "/start", token, game_id="random")
    for _ in range(25):   # the game restarts by itself after each win
        outcome, guesses, body = binary_search_game(live, token)
        assert outcome == "win", body
        assert guesses <= 7
    assert metrics(live, token) == {
        "user": "searcher", "games": {"random": {"win": 25, "lose": 0, "total": 25}}}


def test_random_hints_say_where_the_secret_is(live):
    token = live.create()
    fresh = live.ok("POST", "/start", token, game_id="random")["state"]
    assert guesses_left(fresh) == 7
    low = live.ok("POST", "/move", token, game_id="random", move=1)
    if low["outcome"] is None:            # the secret is above 1
        assert low["state"]["hint"] == "higher"
        assert guesses_left(low["state"]) == 6
        high = live.ok("POST", "/move", token, game_id="random", move=100)
        if high["outcome"] is None:       # and below 100
            assert high["state"]["hint"] == "lower"
            assert guesses_left(high["state"]) == 5


def stubborn_game(live, token):
    """Guess 50, then only numbers on the wrong side of it; returns the last answer."""
    body = live.ok("POST", "/move", token, game_id="random", move=50)
    if body["outcome"] is not None:
        return body
    wrong = iter(range(1, 50)) if body["state"]["hint"] == "higher" else iter(range(100, 50, -1))
    while body["outcome"] is None:
        body = live.ok("POST", "/move", token, game_id="random", move=next(wrong))
    return body


def test_stubborn_guesses_lose_random_after_seven_guesses(live):
    token = live.create("stubborn")
    live.ok("POST", "/start", token, game_id="random")
    outcomes = []
    for _ in range(6):
        body = stubborn_game(live, token)
        outcomes.append(body["outcome"])
        if body["outcome"] == "win":          # only when the secret was 50, the first guess
            assert guesses_left(body["state"]) == 6, body
        else:
            assert body["outcome"] == "lose" and guesses_left(body["state"]) == 0, body
    assert "lose" in outcomes
    assert metrics(live, token)["games"]["random"] == {
        "win": outcomes.count("win"), "lose": outcomes.count("lose"), "total": 6}


def test_finished_game_shows_final_state_then_restarts(live):
    token = live.create()
    fresh = live.ok("POST", "/start", token, game_id="random")["state"]
    body = stubborn_game(live, token)
    while body["outcome"] != "lose":
        body = stubborn_game(live, token)
    assert body["stats"]["lose"] >= 1
    assert body["state"] != fresh
    assert guesses_left(body["state"]) == 0
    status = live.ok("GET", "/status", token, game_id="random")
    assert status["outcome"] is None
    assert status["state"] == fresh


def test_losing_final_state_reveals_the_secret(live):
    token = live.create()
    live.ok("POST", "/start", token, game_id="random")
    fresh = live.ok("GET", "/status", token, game_id="random")["state"]
    body = stubborn_game(live, token)
    while body["outcome"] != "lose":
        body = stubborn_game(live, token)
    revealed = {k: v for k, v in body["state"].items() if k not in fresh}
    assert len(revealed) == 1, body["state"]
    secret = next(iter(revealed.values()))
    assert isinstance(secret, int) and 1 <= secret <= 100
    assert guesses_left(body["state"]) == 0
    # every guess after the first (50) was on the wrong side, so the last hint points from 50
    if body["state"]["hint"] == "higher":
        assert secret > 50
    else:
        assert body["state"]["hint"] == "lower" and secret < 50


# ==========================================================================
# Game API: tic-tac-toe and the third game
# ==========================================================================

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]


def ttt_cells(state):
    """The board as 9 entries: a mark string or None for a free cell."""
    board = state["board"]
    if isinstance(board, str):
        board = [c for c in board if c not in "|\n/"]
    if isinstance(board[0], list):
        board = [c for row in board for c in row]
    assert len(board) == 9, state
    return [c if c not in (None, "", " ", ".", "-", "_", 0) else None for c in board]


def ttt_choose(cells, me, smart):
    free = [i for i in range(9) if cells[i] is None]
    if not smart:
        return free[0]
    them = {c for c in cells if c is not None and c != me}
    for mark in ([me] if me else []) + list(them):
        for line in LINES:
            marks = [cells[i] for i in line]
            if marks.count(mark) == 2 and marks.count(None) == 1:
                return line[marks.index(None)]
    for i in (4, 0, 2, 6, 8, 1, 3, 5, 7):
        if i in free:
            return i


def ttt_game(live, token, smart):
    """Play one tic-tac-toe game; returns the final answer."""
    state = live.ok("GET", "/status", token, game_id="tictactoe")["state"]
    me = None
    while True:
        cells = ttt_cells(state)
        cell = ttt_choose(cells, me, smart)
        body = live.ok("POST", "/move", token, game_id="tictactoe", move=cell)
        if me is None:
            me = ttt_cells(body["state"])[cell]
        if body["outcome"] is not None:
            return body
        state = body["state"]


def play_ttt_until(live, token, smart, wanted, limit):
    seen = []
    for _ in range(limit):
        body = ttt_game(live, token, smart)
        seen.append(body["outcome"])
        if body["outcome"] == wanted:
            return body, seen
    pytest.fail(f"no {wanted} in {limit} games: {seen}")


def test_tictactoe_can_be_won_against_a_blundering_server(live):
    token = live.create()
    live.ok("POST", "/start", token, game_id="tictactoe")
    body, seen = play_ttt_until(live, token, smart=True, wanted="win", limit=300)
    assert body["stats"]["win"] == 1
    assert body["stats"]["total"] == len(seen)


def test_tictactoe_is_lost_by_a_careless_player(live):
    token = live.create()
    live.ok("POST", "/start", token, game_id="tictactoe")
    body, seen = play_ttt_until(live, token, smart=False, wanted="lose", limit=50)
    assert body["stats"]["lose"] == 1
    assert body["stats"]["total"] == len(seen)


def test_tictactoe_draw_counts_in_total_only(live):
    """A full board with no line: outcome "draw", counted in total but neither in win nor lose."""
    token = live.create()
    live.ok("POST", "/start", token, game_id="tictactoe")
    body, seen = play_ttt_until(live, token, smart=True, wanted="draw", limit=100)
    assert body["outcome"] == "draw"
    assert all(c is not None for c in ttt_cells(body["state"]))
    stats = body["stats"]
    assert stats == {"win": seen.count("win"), "lose": seen.count("lose"), "total": len(seen)}
    assert stats["win"] + stats["lose"] == stats["total"] - 1
    status = live.ok("GET", "/status", token, game_id="tictactoe")
    assert all(c is None for c in ttt_cells(status["state"]))


def test_tictactoe_describes_how_strong_the_server_is(live):
    game = game_info(live, "tictactoe")
    text = (game["description"] + " " + game["moves"]).lower()
    assert re.search(r"\d+ ?%|blunder|mistake|strong|perfect|sometimes", text), game


@pytest.mark.parametrize("move", [9, "9", -1, "x", 4.5, [4], True, "4.5"])
def test_illegal_tictactoe_move_is_400_and_leaves_state_unchanged(live, move):
    token = live.create()
    live.ok("POST", "/start", token, game_id="tictactoe")
    before = live.ok("GET", "/status", token, game_id="tictactoe")
    message = assert_json_error(live.api("POST", "/move", token, game_id="tictactoe", move=move), 400)
    assert "0" in message and "8" in message, message
    assert live.ok("GET", "/status", token, game_id="tictactoe") == before


def test_occupied_tictactoe_cell_is_400_and_leaves_state_unchanged(live):
    token = live.create()
    live.ok("POST", "/start", token, game_id="tictactoe")
    body = live.ok("POST", "/move", token, game_id="tictactoe", move=4)
    cells = ttt_cells(body["state"])
    taken = [i for i in range(9) if cells[i] is not None]
    before = live.ok("GET", "/status", token, game_id="tictactoe")
    for cell in taken:
        assert_json_error(live.api("POST", "/move", token, game_id="tictactoe", move=cell), 400)
    assert live.ok("GET", "/status", token, game_id="tictactoe") == before


@pytest.mark.parametrize("move", [0, "0", 101, "abc", 50.5, "50.5", True, [50], {"guess": 50}])
def test_illegal_random_guess_is_400_and_leaves_state_unchanged(live, move):
    token = live.create()
    live.ok("POST", "/start", token, game_id="random")
    live.ok("POST", "/move", token, game_id="random", move=50)
    before = live.ok("GET", "/status", token, game_id="random")
    message = assert_json_error(live.api("POST", "/move", token, game_id="random", move=move), 400)
    assert "1" in message and "100" in message, message
    assert live.ok("GET", "/status", token, game_id="random") == before


def game_info(live, game_id):
    return next(g for g in live.get("/games").json() if g["id"] == game_id)


def test_nim_is_offered_with_rules_and_a_move_example(live):
    game = game_info(live, "nim")
    assert "heap" in game["description"].lower()
    assert re.search(r"move=\d+:\d+", game["moves"]), game


def nim_xor_move(heaps):
    """Keep the XOR of the heaps at zero; with no such move, take one stone."""
    total = 0
    for size in heaps:
        total ^= size
    for heap, size in enumerate(heaps):
        if total and size ^ total < size:
            return heap, size - (size ^ total)
    return nim_careless_move(heaps)


def nim_careless_move(heaps):
    """One stone from the first heap that has any."""
    return next(heap for heap, size in enumerate(heaps) if size), 1


def play_nim(live, token, strategy):
    state = live.ok("GET", "/status", token, game_id="nim")["state"]
    for _ in range(50):
        heap, take = strategy(state["heaps"])
        body = live.ok("POST", "/move", token, game_id="nim", move=f"{heap}:{take}")
        if body["outcome"] is not None:
            return body
        state = body["state"]
        assert sum(state["heaps"]) > 0
    pytest.fail(f"a nim game did not end: {state}")


def test_nim_keeping_the_xor_at_zero_always_wins(live):
    token = live.create("nimble")
    live.ok("POST", "/start", token, game_id="nim")
    for _ in range(10):
        body = play_nim(live, token, nim_xor_move)
        assert body["outcome"] == "win", body
        assert sum(body["state"]["heaps"]) == 0
    assert metrics(live, token)["games"] == {"nim": {"win": 10, "lose": 0, "total": 10}}


def test_nim_careless_play_loses(live):
    token = live.create()
    live.ok("POST", "/start", token, game_id="nim")
    outcomes = []
    while "lose" not in outcomes and len(outcomes) < 20:
        outcomes.append(play_nim(live, token, nim_careless_move)["outcome"])
    assert outcomes[-1] == "lose", outcomes
    assert metrics(live, token)["games"]["nim"] == {
        "win": outcomes.count("win"), "lose": 1, "total": len(outcomes)}


def test_nim_accepts_a_json_move_object(live):
    token = live.create()
    heaps = live.ok("POST", "/start", token, game_id="nim")["state"]["heaps"]
    heap, take = nim_xor_move(heaps)
    body = live.ok("POST", "/move", token, game_id="nim", move={"heap": heap, "take": take})
    assert sum(body["state"]["heaps"]) < sum(heaps)


@pytest.mark.parametrize("move", ["3:1", "0:0", "0:99", "x", "1", {"heap": 0}, True])
def test_illegal_nim_move_is_400_and_leaves_state_unchanged(live, move):
    token = live.create()
    live.ok("POST", "/start", token, game_id="nim")
    before = live.ok("GET", "/status", token, game_id="nim")
    assert_json_error(live.api("POST", "/move", token, game_id="nim", move=move), 400)
    assert live.ok("GET", "/status", token, game_id="nim") == before


# ==========================================================================
# Game API: error codes
# ==========================================================================

def test_start_without_game_id_is_400(live):
    token = live.create()
    message = assert_json_error(live.api("POST", "/start", token), 400)
    assert "game_id" in message


def test_move_without_move_is_400(live):
    token = live.create()
    live.ok("POST", "/start", token, game_id="random")
    message = assert_json_error(live.api("POST", "/move", token, game_id="random"), 400)
    assert "move" in message


def test_missing_move_message_suggests_a_legal_move_for_that_game(live):
    token = live.create()
    live.ok("POST", "/start", token, game_id="tictactoe")
    message = assert_json_error(live.api("POST", "/move", token, game_id="tictactoe"), 400)
    examples = [int(n) for n in re.findall(r"move=(\d+)", message)]
    assert all(0 <= n <= 8 for n in examples), message


def test_status_without_game_id_is_400(live):
    token = live.create()
    assert_json_error(live.api("GET", "/status", token), 400)


def test_no_token_at_all_is_refused(live):
    assert_json_error(live.api("POST", "/start", None, game_id="random"), (400, 401))
    assert_json_error(live.api("GET", "/metrics", None), (400, 401))


def test_unknown_token_is_401(live):
    live.create()
    fake = "x" * 43
    for method, path, params in (("POST", "/start", {"game_id": "random"}),
                                 ("POST", "/move", {"game_id": "random", "move": 5}),
                                 ("GET", "/status", {"game_id": "random"}),
                                 ("GET", "/metrics", {})):
        assert_json_error(live.api(method, path, fake, **params), 401)


def test_unknown_game_is_404(live):
    token = live.create()
    assert_json_error(live.api("POST", "/start", token, game_id="chess"), 404)
    assert_json_error(live.api("GET", "/status", token, game_id="chess"), 404)
    assert_json_error(live.api("POST", "/move", token, game_id="chess", move=1), 404)


def test_move_before_start_is_409(live):
    token = live.create()
    assert_json_error(live.api("POST", "/move", token, game_id="random", move=50), 409)


@pytest.fixture(scope="module")
def expired_user(srvmod, tmp_path_factory):
    """A server with token_ttl=5 and a user who won one game, then expired.

    Not 1 s: a token's start is a whole second, so a 1-s token may last a few
    milliseconds, less than a game takes on a loaded machine.
    """
    live = Live(srvmod, tmp_path_factory.mktemp("ttl") / "data", token_ttl=5)
    try:
        reply = live.post("/create/ghost")
        assert reply.status == 201
        token, expires_at = reply.json()["token"], reply.json()["expires_at"]
        assert expires_at <= time.time() + 6
        live.ok("POST", "/start", token, game_id="random")
        outcome, _, _ = binary_search_game(live, token)
        assert outcome == "win"
        while time.time() < expires_at + 1.05:
            time.sleep(0.05)
        yield live, token
    finally:
        live.close()


@pytest.mark.parametrize("method,path,params", [
    ("POST", "/start", {"game_id": "random"}),
    ("POST", "/move", {"game_id": "random", "move": 50}),
    ("GET", "/status", {"game_id": "random"}),
], ids=["start", "move", "status"])
def test_expired_token_is_401_saying_expired_and_how_to_renew(expired_user, method, path, params):
    live, token = expired_user
    message = assert_json_error(live.api(method, path, token, **params), 401)
    assert "expired" in message.lower()
    assert "/create" in message


def test_metrics_still_answer_for_an_expired_token(expired_user):
    live, token = expired_user
    assert metrics(live, token) == {
        "user": "ghost", "games": {"random": {"win": 1, "lose": 0, "total": 1}}}


# ==========================================================================
# Game API: metrics, restart, kill -9, concurrency, full disk
# ==========================================================================

def metrics(live, token):
    """GET /metrics for token, without the public id the server may add beside user and games."""
    body = live.ok("GET", "/metrics", token)
    body.pop("id", None)
    return body


def all_users(live):
    """The entries of /allmetrics: one dict per user, with its games."""
    reply = live.get("/allmetrics")
    assert reply.status == 200, reply
    body = reply.json()
    if isinstance(body, dict) and "users" in body:
        body = body["users"]
    if isinstance(body, dict):
        body = [dict(v, id=k) if isinstance(v, dict) and "id" not in v else v for k, v in body.items()]
    assert isinstance(body, list), body
    return body


def test_allmetrics_lists_every_user_with_their_games(live):
    a, b = live.create("amy"), live.create("bob")
    live.ok("POST", "/start", a, game_id="random")
    binary_search_game(live, a)
    users = all_users(live)
    by_name = {u.get("user", u.get("name")): u for u in users}
    assert set(by_name) == {"amy", "bob"}
    assert by_name["amy"]["games"] == {"random": {"win": 1, "lose": 0, "total": 1}}
    assert by_name["bob"]["games"] == {}
    del b


def test_restart_mid_game_keeps_the_exact_status(start, tmp_path):
    first = start()
    token = first.create("resumer")
    first.ok("POST", "/start", token, game_id="tictactoe")
    first.ok("POST", "/move", token, game_id="tictactoe", move=4)
    before = first.ok("GET", "/status", token, game_id="tictactoe")
    metrics = first.ok("GET", "/metrics", token)
    first.close()
    second = start(tmp_path / "data")
    assert second.ok("GET", "/status", token, game_id="tictactoe") == before
    assert second.ok("GET", "/metrics", token) == metrics


def test_restart_mid_game_keeps_the_hidden_secret(start, tmp_path):
    first = start()
    token = first.create()
    for _ in range(20):  # until three guesses leave the game open (a lucky hit wins early)
        first.ok("POST", "/start", token, game_id="random")
        low, high, used = 1, 100, 0
        for _ in range(3):
            guess = (low + high) // 2
            body = first.ok("POST", "/move", token, game_id="random", move=guess)
            used += 1
            if body["outcome"] is not None:
                break
            low, high = (guess + 1, high) if body["state"]["hint"] == "higher" else (low, guess - 1)
        if body["outcome"] is None:
            break
    assert body["outcome"] is None
    first.close()
    second = start(tmp_path / "data")
    while True:
        guess = (low + high) // 2
        body = second.ok("POST", "/move", token, game_id="random", move=guess)
        used += 1
        if body["outcome"] is not None:
            break
        low, high = (guess + 1, high) if body["state"]["hint"] == "higher" else (low, guess - 1)
    assert body["outcome"] == "win" and used <= 7


def test_acknowledged_move_survives_kill_9(spawn, tmp_path):
    data = tmp_path / "data"
    proc = spawn(data)
    token = proc.call("POST", "/create/survivor").json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert proc.call("POST", "/start", {"game_id": "tictactoe"}, auth).status == 200
    moved = proc.call("POST", "/move", {"game_id": "tictactoe", "move": 4}, auth)
    assert moved.status == 200
    proc.kill9()
    again = spawn(data)
    status = again.call("GET", "/status?game_id=tictactoe", headers=auth)
    assert status.status == 200, status
    assert status.json()["state"] == moved.json()["state"]


def test_thirty_two_concurrent_bots_end_with_exact_metrics(unlimited):
    live = unlimited
    tokens = [live.create(f"bot{i}") for i in range(32)]
    failures = []

    def bot(token):
        try:
            live.ok("POST", "/start", token, game_id="random")
            for _ in range(3):
                outcome, _, body = binary_search_game(live, token)
                if outcome != "win":
                    failures.append(body)
        except AssertionError as error:
            failures.append(error)

    threads = [threading.Thread(target=bot, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    for i, token in enumerate(tokens):
        assert metrics(live, token) == {
            "user": f"bot{i}", "games": {"random": {"win": 3, "lose": 0, "total": 3}}}


def test_thirty_two_bots_on_one_user_and_game_are_serialised(unlimited):
    live = unlimited
    token = live.create("shared")
    live.ok("POST", "/start", token, game_id="random")
    outcomes, statuses = [], []

    def bot(seed):
        rng = random.Random(seed)
        for _ in range(10):
            reply = live.api("POST", "/move", token, game_id="random", move=rng.randint(1, 100))
            statuses.append(reply.status)
            if reply.status == 200 and reply.json()["outcome"] is not None:
                outcomes.append(reply.json()["outcome"])

    threads = [threading.Thread(target=bot, args=(seed,)) for seed in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(statuses) <= {200, 400}, set(statuses)
    assert statuses.count(200) > 0
    stats = live.ok("GET", "/metrics", token)["games"]["random"]
    assert stats == {"win": outcomes.count("win"), "lose": outcomes.count("lose"), "total": len(outcomes)}


def test_move_on_a_full_disk_is_503_and_leaves_state_unchanged(live, full_disk):
    token = live.create()
    live.ok("POST", "/start", token, game_id="tictactoe")
    before = live.ok("GET", "/status", token, game_id="tictactoe")
    full_disk(True)
    assert_json_error(live.api("POST", "/move", token, game_id="tictactoe", move=4), 503)
    assert live.ok("GET", "/status", token, game_id="tictactoe") == before


def test_create_on_a_full_disk_is_503_and_creates_no_user(live, full_disk):
    full_disk(True)
    reply = live.post("/create/nodisk")
    assert_json_error(reply, 503)
    full_disk(False)
    assert all_users(live) == []


# ==========================================================================
# Game API: tokens never leak
# ==========================================================================

def test_token_never_appears_in_allmetrics_log_or_data(spawn, tmp_path):
    data = tmp_path / "data"
    proc = spawn(data, quiet=False)
    token = proc.call("POST", "/create/leaky").json()["token"]
    prefix = token[:8]
    proc.call("POST", "/start", {"game_id": "random"}, {"Authorization": f"Bearer {token}"})
    proc.call("POST", f"/move?token={token}&game_id=random&move=50")
    proc.call("GET", f"/status?user_token={token}&game_id=random")
    proc.call("GET", "/metrics", urlencode({"token": token}).encode(),
              {"Content-Type": "application/x-www-form-urlencoded"})
    proc.call("GET", f"/metrics?token={token}")
    proc.call("GET", f"/metrics?%74oken={token}")            # the name percent-encoded
    proc.call("GET", f"/status?game_id=random&user_%74oken={token}")
    proc.call("GET", f"/metrics?TOKEN={token}")
    proc.call("GET", f"/metrics?token%00={token}")            # a NUL in the name
    proc.call("GET", f"/metrics?game_id=random;token={token}")  # the old ; separator
    proc.call("GET", f"/metrics/{token}")                      # in the path, where no route takes it
    proc.call("GET", f"/teacher?code={token[:20]}")            # a short secret, by its parameter's name
    allmetrics = proc.call("GET", "/allmetrics").body.decode()
    assert token not in allmetrics and prefix not in allmetrics
    journal_text = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    assert token.encode() not in journal_text and prefix.encode() not in journal_text
    proc.stop()
    log = proc.output()
    assert "/move" in log, "the access log should still log the request"
    assert token not in log and prefix not in log and token[:20] not in log
    assert log.count("[hidden]") == 10   # one for each request that carried it in its target
    for path in data.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert token.encode() not in content and prefix.encode() not in content, path


def test_stored_token_is_only_its_sha256(start, tmp_path):
    live = start()
    token = live.create("hashed")
    live.close()
    text = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "data").glob("*") if p.is_file())
    digest = hashlib.sha256(token.encode()).digest()
    encodings = (digest.hex(), base64.b64encode(digest).decode(), base64.urlsafe_b64encode(digest).decode(),
                 base64.urlsafe_b64encode(digest).decode().rstrip("="))
    assert any(e in text for e in encodings), "the token's SHA-256 is not in the data files"


def test_token_still_works_after_restart(start, tmp_path):
    first = start()
    token = first.create("returning")
    first.close()
    second = start(tmp_path / "data")
    assert second.api("POST", "/start", token, game_id="random").status == 200


# ==========================================================================
# Plugins
# ==========================================================================

ORACLE_PLUGIN = '''
"""A test game whose move names the outcome."""
from server import IllegalMove


class Oracle:
    id = "oracle"
    name = "Oracle"
    description = "Say win, lose or draw to end the game, step to count, boom to crash."
    moves = "one of step, win, lose, draw, boom; for example move=step"

    def new_state(self, rng):
        return {"secret": "hidden-%d" % rng.randrange(10 ** 6, 10 ** 7), "steps": 0, "last": None}

    def play(self, state, move, rng):
        state["steps"] += 1      # in place on purpose: a failed move must not keep this
        state["last"] = move
        if move == "boom":
            raise RuntimeError("the plugin broke")
        if move in ("win", "lose", "draw"):
            return state, move
        if move == "step" or not isinstance(move, str):
            return state, None
        raise IllegalMove("move must be step, win, lose, draw or boom")

    def view(self, state, final=False):
        shown = {"steps": state["steps"], "last": state["last"]}
        if final:
            shown["secret"] = state["secret"]
        return shown


class NotAGame:
    """No id: not offered."""
'''


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "oracle_games.py"
    path.write_text(ORACLE_PLUGIN)
    return path


@pytest.fixture
def oracle(start, plugin_file):
    live = start(games_file=str(plugin_file))
    token = live.create("seer")
    live.ok("POST", "/start", token, game_id="oracle")
    return live, token


def test_plugin_game_is_offered_beside_the_built_ins(oracle):
    live, _ = oracle
    games = {g["id"]: g for g in live.get("/games").json()}
    assert {"random", "tictactoe", "nim", "oracle"} <= set(games)
    assert games["oracle"]["name"] == "Oracle"
    assert games["oracle"]["description"].startswith("Say win, lose or draw")
    assert games["oracle"]["moves"].startswith("one of step")


def test_plugin_state_is_shown_through_its_view(oracle):
    live, token = oracle
    status = live.api("GET", "/status", token, game_id="oracle")
    assert status.json()["state"] == {"steps": 0, "last": None}
    assert b"hidden-" not in status.body


def test_plugin_win_reveals_the_final_state_and_counts(oracle):
    live, token = oracle
    live.ok("POST", "/move", token, game_id="oracle", move="step")
    body = live.ok("POST", "/move", token, game_id="oracle", move="win")
    assert body["outcome"] == "win"
    assert body["state"]["steps"] == 2 and body["state"]["secret"].startswith("hidden-")
    assert body["stats"] == {"win": 1, "lose": 0, "total": 1}
    assert live.ok("GET", "/status", token, game_id="oracle")["state"] == {"steps": 0, "last": None}


def test_plugin_draw_counts_in_total_only(oracle):
    live, token = oracle
    body = live.ok("POST", "/move", token, game_id="oracle", move="draw")
    assert body["outcome"] == "draw"
    assert body["stats"] == {"win": 0, "lose": 0, "total": 1}
    live.ok("POST", "/move", token, game_id="oracle", move="lose")
    assert live.ok("GET", "/metrics", token)["games"]["oracle"] == {"win": 0, "lose": 1, "total": 2}


def test_plugin_receives_the_move_as_sent(oracle):
    live, token = oracle
    body = live.ok("POST", "/move", token, game_id="oracle", move=[1, {"a": 2}])
    assert body["state"]["last"] == [1, {"a": 2}]
    reply = live.call("POST", f"/move?game_id=oracle&move=step&token={token}")
    assert reply.status == 200 and reply.json()["state"]["last"] == "step"


def test_plugin_illegal_move_is_400_with_its_message_and_state_unchanged(oracle):
    live, token = oracle
    live.ok("POST", "/move", token, game_id="oracle", move="step")
    before = live.ok("GET", "/status", token, game_id="oracle")
    message = assert_json_error(live.api("POST", "/move", token, game_id="oracle", move="fly"), 400)
    assert "move must be step, win, lose, draw or boom" in message
    assert live.ok("GET", "/status", token, game_id="oracle") == before


def test_plugin_that_raises_during_a_move_is_500_and_state_unchanged(oracle):
    live, token = oracle
    live.ok("POST", "/move", token, game_id="oracle", move="step")
    before = live.ok("GET", "/status", token, game_id="oracle")
    assert_json_error(live.api("POST", "/move", token, game_id="oracle", move="boom"), 500)
    assert live.ok("GET", "/status", token, game_id="oracle") == before
    body = live.ok("POST", "/move", token, game_id="oracle", move="step")
    assert body["state"]["steps"] == 2
    assert live.get("/health-check").status == 200


def test_plugin_loaded_from_the_command_line_keeps_illegal_moves_at_400(spawn, tmp_path, plugin_file):
    proc = spawn(tmp_path / "data", "--games", plugin_file)
    assert "oracle" in [g["id"] for g in proc.call("GET", "/games").json()]
    token = proc.call("POST", "/create/cli").json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert proc.call("POST", "/start", {"game_id": "oracle"}, auth).status == 200
    assert_json_error(proc.call("POST", "/move", {"game_id": "oracle", "move": "fly"}, auth), 400)
    body = proc.call("POST", "/move", {"game_id": "oracle", "move": "win"}, auth).json()
    assert body["outcome"] == "win"


BAD_PLUGINS = [
    pytest.param("import not_a_module_anywhere_42\n", "No module", id="import-error"),
    pytest.param("def broken(:\n", "", id="syntax-error"),
    pytest.param("raise RuntimeError('plugin exploded at import')\n", "exploded", id="raises-at-import"),
    pytest.param(ORACLE_PLUGIN.replace("    def view(", "    def _hidden_view("), "view",
                 id="missing-view"),
    pytest.param(ORACLE_PLUGIN.replace("    def play(", "    def _hidden_play("), "play",
                 id="missing-play"),
]


@pytest.mark.parametrize("source,problem", BAD_PLUGINS)
def test_bad_plugin_file_stops_startup_with_a_clear_message(tmp_path, source, problem):
    path = tmp_path / "bad_games.py"
    path.write_text(source)
    result = run_to_the_end(tmp_path, "--host", "127.0.0.1", "--port", free_port(),
                        "--data", tmp_path / "data", "--quiet", "--games", path)
    line = assert_one_line_startup_error(result, "bad_games.py")
    assert problem in line


def test_missing_plugin_file_stops_startup(tmp_path):
    result = run_to_the_end(tmp_path, "--host", "127.0.0.1", "--port", free_port(),
                        "--data", tmp_path / "data", "--quiet", "--games", tmp_path / "nowhere.py")
    assert_one_line_startup_error(result, "nowhere.py")


def test_bad_plugin_raises_startup_error_in_process(srvmod, tmp_path):
    path = tmp_path / "bad_games.py"
    path.write_text(ORACLE_PLUGIN.replace("    def new_state(", "    def _hidden_new_state("))
    with pytest.raises(srvmod.StartupError) as refused:
        srvmod.make_server(host="127.0.0.1", port=0, data_dir=str(tmp_path / "data"),
                           quiet=True, games_file=str(path))
    assert "bad_games.py" in str(refused.value)


# A games file in the second design's style, unchanged: an abstract base with
# the three methods and no name, and a game whose id is the instance's name.
SECOND_DESIGN_GAMES = '''
from abc import ABC, abstractmethod


class Game(ABC):
    @abstractmethod
    def start(self):
        """Return the first state."""

    @abstractmethod
    def move(self, m, state):
        """Return the state after the player's move m."""

    @abstractmethod
    def status(self, state):
        """1 won, 0 lost, 2 still playing."""


class Tens(Game):
    """Start at 10 and add your move: reach a multiple of 10 to win, land on 4 mod 10 to lose."""

    def __init__(self):
        self.name = "random"

    def start(self):
        return 10

    def move(self, m, state):
        return state + int(m)

    def status(self, state):
        if state % 10 == 0:
            return 1
        if state % 10 == 4:
            return 0
        return 2
'''


@pytest.fixture
def second_design(start, tmp_path):
    path = tmp_path / "second_design_games.py"
    path.write_text(SECOND_DESIGN_GAMES)
    live = start(games_file=str(path))
    token = live.create("tens-player")
    return live, token


def form(live, path, **fields):
    """POST a form body, as the second design's clients do, token in the token field."""
    return live.call("POST", path, urlencode(fields),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_second_design_game_replaces_the_built_in_game_of_its_name(second_design):
    live, _ = second_design
    games = live.get("/games").json()
    assert [game["id"] for game in games].count("random") == 1
    tens = next(game for game in games if game["id"] == "random")
    assert "multiple of 10" in tens["description"]


def test_second_design_game_plays_to_a_win_with_form_bodies(second_design):
    live, token = second_design
    started = form(live, "/start", game_id="random", token=token)
    assert (started.status, started.json()["state"]) == (200, 10)
    step = form(live, "/move", game_id="random", move="3", token=token).json()
    assert (step["state"], step["outcome"]) == (13, None)
    final = form(live, "/move", game_id="random", move="7", token=token).json()
    assert (final["state"], final["outcome"]) == (20, "win")
    assert final["stats"] == {"win": 1, "lose": 0, "total": 1}


def test_second_design_game_is_lost_at_four_mod_ten(second_design):
    live, token = second_design
    form(live, "/start", game_id="random", token=token)
    final = form(live, "/move", game_id="random", move="4", token=token).json()
    assert (final["state"], final["outcome"]) == (14, "lose")
    assert final["stats"] == {"win": 0, "lose": 1, "total": 1}


def test_banner_says_which_built_in_game_a_games_file_replaces(spawn, tmp_path):
    path = tmp_path / "second_design_games.py"
    path.write_text(SECOND_DESIGN_GAMES)
    proc = spawn(tmp_path / "data", "--games", path)
    assert f"game 'random' from {path} replaces the built-in one" in proc.stdout()


def test_two_games_with_one_id_in_one_file_stop_startup(tmp_path):
    path = tmp_path / "twice_games.py"
    path.write_text(SECOND_DESIGN_GAMES + "\n\nclass Again(Tens):\n    pass\n")
    result = run_to_the_end(tmp_path, "--host", "127.0.0.1", "--port", free_port(),
                        "--data", tmp_path / "data", "--quiet", "--games", path)
    assert_one_line_startup_error(result, "twice_games.py", "'random'")


# ==========================================================================
# Our own endpoints beyond the seed's: /players and /events
# ==========================================================================

def test_players_lists_each_child_once_ranked_among_children(live):
    count_unverified(live)  # plain posts, as from an older page
    live.post_score("amy", 500)
    live.post_score("amy", 400)
    live.post_score("bob", 450)
    live.post_score("cy", 100)
    reply = live.get("/players")
    assert reply.status == 200
    assert reply.json() == [
        {"name": "amy", "best": 500, "rank": 1, "verified": False, "run": None},
        {"name": "bob", "best": 450, "rank": 2, "verified": False, "run": None},
        {"name": "cy", "best": 100, "rank": 3, "verified": False, "run": None},  # amy's second score counts once
    ]


def test_children_with_the_same_best_share_a_rank(unlimited):
    count_unverified(unlimited)  # plain posts, as from an older page
    for name, score in (("ann", 34), ("ben", 50), ("cat", 34), ("dan", 34), ("eve", 12)):
        unlimited.post_score(name, score)
    rows = unlimited.get("/players").json()
    assert [(row["name"], row["rank"]) for row in rows] == [
        ("ben", 1), ("ann", 2), ("cat", 2), ("dan", 2), ("eve", 5)]
    paged = unlimited.get("/players?offset=2&limit=2").json()
    assert [(row["name"], row["rank"]) for row in paged] == [("cat", 2), ("dan", 2)]
    found = unlimited.get("/players?q=eve").json()
    assert found == [{"name": "eve", "best": 12, "rank": 5, "verified": False, "run": None}]


def test_players_filters_by_name_and_pages(live):
    count_unverified(live)  # plain posts, as from an older page
    for name, score in (("Amy", 5), ("bob", 4), ("mary", 3), ("cy", 2)):
        live.post_score(name, score)
    assert [p["name"] for p in live.get("/players?q=AM").json()] == ["Amy"]
    assert [p["name"] for p in live.get("/players?q=y").json()] == ["Amy", "mary", "cy"]
    assert [p["name"] for p in live.get("/players?limit=2&offset=1").json()] == ["bob", "mary"]


def read_event(conn):
    """Read one SSE event block (up to a blank line) from a RawConnection."""
    while b"\n\n" not in conn.buf:
        conn._fill()
    block, conn.buf = conn.buf.split(b"\n\n", 1)
    return block.decode()


def test_events_stream_announces_leaderboard_changes(live):
    conn = RawConnection(live.port, timeout=5)
    try:
        conn.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        while b"\r\n\r\n" not in conn.buf:
            conn._fill()
        head, conn.buf = conn.buf.split(b"\r\n\r\n", 1)
        assert b" 200 " in head.split(b"\r\n")[0]
        assert b"text/event-stream" in head
        blocks = [read_event(conn)]
        while "event: scores" not in blocks[-1]:
            blocks.append(read_event(conn))
        assert "retry: 3000" in "\n".join(blocks)
        first = json.loads(re.search(r"^data: (.*)$", blocks[-1], re.M).group(1))
        live.post_score("eventful", 1)
        block = read_event(conn)
        while "event: scores" not in block:
            block = read_event(conn)
        second = json.loads(re.search(r"^data: (.*)$", block, re.M).group(1))
        assert second["version"] > first["version"]
        top = live.get("/players?limit=10&ties=1").json()
        assert second["players"] == top and second["count"] == len(top)
    finally:
        conn.close()


def test_a_scores_event_carries_the_top_rows_and_only_counts_the_many_tied_beyond(live):
    count_unverified(live)
    for child in range(30):
        post_score(live, f"tied{child}", 77)
    conn = RawConnection(live.port, timeout=5)
    try:
        conn.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        block = read_event(conn)
        while "event: scores" not in block:
            block = read_event(conn)
        event = json.loads(re.search(r"^data: (.*)$", block, re.M).group(1))
    finally:
        conn.close()
    assert event["count"] == 30
    assert event["players"] == live.get("/players?limit=10&ties=1").json()[:15]


def test_event_subscribers_beyond_the_cap_get_a_json_503(live):
    live.srv.app.broadcaster.max_streams = 2
    streams = [RawConnection(live.port) for _ in range(2)]
    try:
        for stream in streams:
            stream.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            stream._fill()
        assert_json_error(live.get("/events"), 503)
    finally:
        for stream in streams:
            stream.close()


def test_open_event_stream_does_not_delay_shutdown(live):
    conn = RawConnection(live.port, timeout=5)
    try:
        conn.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        read_event(conn) if b"\r\n\r\n" in conn.buf else conn._fill()
        closing = threading.Thread(target=live.close)
        closing.start()
        closing.join(10)  # a liveness bound, not a speed: a stream that held the server would hold it for ever
        assert not closing.is_alive(), "an open event stream kept the server from stopping"
    finally:
        conn.close()


# ----------------------------------------------------------------- the README's examples

def readme_python_blocks():
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)


def test_readme_bot_wins_guess_the_number(live, tmp_path):
    bot = next(block for block in readme_python_blocks() if "binary" in block)
    assert len(bot.strip().splitlines()) <= 20
    script = tmp_path / "bot.py"
    script.write_text(bot.replace("http://localhost:8080", f"http://127.0.0.1:{live.port}"), encoding="utf-8")
    result = retry_start(lambda: subprocess.run([sys.executable, str(script)], capture_output=True,
                                                encoding="utf-8", timeout=30, env=subprocess_env()))
    assert result.returncode == 0, result.stderr
    # The stats come from GET /status with parameters in the query string.
    assert result.stdout == "win {'win': 1, 'lose': 0, 'total': 1}\n"


def test_readme_example_game_is_offered_and_plays_to_an_outcome(start, tmp_path):
    example = next(block for block in readme_python_blocks() if "class RockPaperScissors" in block)
    path = tmp_path / "rps.py"
    path.write_text(example)
    live = start(games_file=str(path))
    assert "rps" in [game["id"] for game in live.get("/games").json()]
    token = live.create("rps-player")
    live.ok("POST", "/start", token, game_id="rps")
    assert_json_error(live.api("POST", "/move", token, game_id="rps", move="lizard"), 400)
    outcome = None
    for _ in range(200):
        outcome = live.ok("POST", "/move", token, game_id="rps", move="rock")["outcome"]
        if outcome:
            break
    assert outcome in ("win", "lose")
    assert live.ok("GET", "/metrics", token)["games"]["rps"]["total"] == 1


# ==========================================================================
# Per-client limits: one child cannot spoil it for the others
# ==========================================================================

def test_three_hundred_connections_from_one_address_do_not_shut_out_another(live):
    hoard = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", live.port), timeout=5, source_address=("127.0.0.2", 0))
            sock.sendall(b"GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n")
            hoard.append(sock)
        reply = live.call("GET", "/", source="127.0.0.3", timeout=5)  # tools/bench.py times it; here it must come
        assert reply.status == 200
        refused = hoard[-1].recv(4096)
        assert b" 503 " in refused and b"this device has" in refused
    finally:
        for sock in hoard:
            sock.close()


def post_from(live, source, name, score):
    return live.call("POST", name_path(name), {"score": score}, source=source)


def test_score_posts_beyond_the_burst_get_429_with_retry_after(live):
    statuses = [post_from(live, "127.0.0.2", "rapid", i).status for i in range(11)]
    assert statuses == [200] * 10 + [429]
    refused = post_from(live, "127.0.0.2", "rapid", 99)
    message = assert_json_error(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert "try again in" in message
    assert post_from(live, "127.0.0.3", "other", 5).status == 200  # another device is not affected


def test_new_names_from_one_device_are_limited_but_known_names_keep_playing(live):
    statuses = [post_from(live, "127.0.0.2", f"kid{i}", 10).status for i in range(7)]
    assert statuses == [200] * 6 + [429]
    assert "new names" in assert_json_error(post_from(live, "127.0.0.2", "kid99", 10), 429)
    assert post_from(live, "127.0.0.2", "kid0", 20).status == 200
    assert post_from(live, "127.0.0.3", "newcomer", 5).status == 200


def test_new_game_api_users_from_one_device_are_limited(live):
    statuses = [live.call("POST", f"/create/bot{i}", source="127.0.0.2").status for i in range(21)]
    assert statuses == [201] * 20 + [429]
    assert live.call("POST", "/create/elsewhere", source="127.0.0.3").status == 201


def test_one_device_gets_at_most_four_live_streams(live):
    streams = []
    try:
        for _ in range(4):
            conn = RawConnection(live.port)
            conn.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            streams.append(conn)
        for conn in streams:
            while b"retry:" not in conn.buf:
                conn._fill()
        fifth = live.call("GET", "/events", timeout=5)
        assert_json_error(fifth, 429)
        other = socket.create_connection(("127.0.0.1", live.port), timeout=5, source_address=("127.0.0.3", 0))
        other.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in other.recv(4096)
        other.close()
    finally:
        for conn in streams:
            conn.close()


def test_a_bot_can_play_hundreds_of_moves_in_a_row(live):
    token = live.create("busy-bot")
    live.ok("POST", "/start", token, game_id="tictactoe")
    statuses = []
    for _ in range(200):
        body = live.ok("POST", "/move", token, game_id="tictactoe",
                       move=live.ok("GET", "/status", token, game_id="tictactoe")["state"]["free"][0])
        statuses.append(body["stats"]["total"])
    assert statuses[-1] >= 20  # about 3 moves a game: every move was answered 200


def test_client_limits_off_lets_one_address_post_as_fast_as_it_likes(unlimited):
    statuses = {post_from(unlimited, "127.0.0.2", f"load{i}", i).status for i in range(50)}
    assert statuses == {200}


def test_a_class_of_thirty_playing_for_twenty_minutes_never_hits_a_limit(live):
    """Thirty devices each post a run every 10 s (a quick game) and open the page: never a 429."""
    now = [1000.0]
    live.srv.app.limits.clock = lambda: now[0]
    statuses = collections.Counter()
    for minute in range(20):
        for tick in range(6):
            now[0] += 10
            for child in range(30):
                source = f"127.0.1.{child + 1}"
                statuses[post_from(live, source, f"child{child}", minute * 10 + tick).status] += 1
    assert statuses == {200: 20 * 6 * 30}


@unix_only("the resource module and its open-file limit")
def test_connection_cap_fits_the_open_file_limit(tmp_path):
    """With 100 descriptors (macOS starts at 256), the cap leaves room for the data files: clean 503s."""
    script = ("import resource, server; resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100)); "
              "server.raise_open_file_limit(); print(server.connection_cap())")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "36", result.stderr


# ==========================================================================
# Names that cannot impersonate and are never blank
# ==========================================================================

@pytest.mark.parametrize("name", ["👩\u200d🚀 Mia", "🧑\u200d💻", "🏳\ufe0f\u200d🌈", "علی\u200cرضا"])
def test_real_names_with_joiners_and_emoji_are_accepted(live, name):
    assert live.post_score(name, 12).status == 200
    assert live.get(name_path(name)).json() == {"name": name, "scores": [12]}


@pytest.mark.parametrize("char", ["\u3164", "\u2800", "\u034f", "\u115f\u1160", "\ufe0f", "\u200b", "\uffa0"],
                         ids=["hangul-filler", "braille-blank", "cgj", "jamo-fillers", "lone-vs16", "zwsp",
                              "halfwidth-filler"])
def test_blank_names_never_reach_the_board(shared, char):
    for name in (char, f"Mia{char}"):
        assert_json_error(shared.post(name_path(name), {"score": 1}), 400)
    assert shared.board() == [CANARY]


def test_full_width_name_is_the_same_player_shown_as_first_spelled(live):
    live.post_score("Rutu", 10)
    assert live.post_score("Ｒｕｔｕ", 20).status == 200
    assert live.board() == [{"name": "Rutu", "score": 20}, {"name": "Rutu", "score": 10}]


@pytest.mark.parametrize("name, scripts", [("Ruтu", ("Latin", "Cyrillic")), ("Rutս", ("Latin", "Armenian"))])
def test_a_name_mixing_alphabets_is_refused_saying_why(live, name, scripts):
    message = assert_json_error(live.post_score(name, 5), 400)
    assert all(script in message for script in scripts), message
    assert live.get(name_path(name)).status in (400, 404)


def test_a_lookalike_of_an_existing_player_is_refused_naming_them(live):
    live.post_score("Toma", 30)
    message = assert_json_error(live.post_score("Тома", 40), 409)  # all Cyrillic
    assert message == "'Тома' looks like the existing player 'Toma'; pick another name"
    assert assert_json_error(live.get("/names/check?name=" + quote("Тома")), 409) == message
    assert live.board() == [{"name": "Toma", "score": 30}]


def test_japanese_with_latin_is_one_name(live):
    assert live.post_score("山田 Taro", 7).status == 200


def test_a_64_kb_name_is_refused_by_its_length(shared):
    message = assert_json_error(shared.post("/score/" + "e%CC%81" * 3000, {"score": 1}), 400)
    assert "bytes long" in message
    assert shared.board() == [CANARY]


# ==========================================================================
# Bounded work per request, and games that cannot be dodged
# ==========================================================================

def test_a_body_nested_more_than_32_levels_is_a_400(shared):
    body = '{"score": 5, "x": ' + "[" * 33 + "]" * 33 + "}"
    message = assert_json_error(shared.post("/score/deep", body), 400)
    assert "32 levels" in message
    assert shared.post("/score/deep", '{"score": 5, "x": ' + "[" * 31 + "]" * 31 + "}").status == 200


HOARDING_PLUGIN = '''
class Hoarder:
    id = "hoarder"
    name = "Hoarder"
    description = "Keeps every move it is given, and nests them as deep as asked."
    moves = "move=grow or move=deep"

    def new_state(self, rng):
        return {"kept": []}

    def play(self, state, move, rng):
        if move == "deep":
            nested = []
            for _ in range(973):
                nested = [nested]
            state["kept"].append(nested)
        else:
            state["kept"].append("x" * 40_000)
        return state, None

    def view(self, state, final=False):
        return {"kept": len(state["kept"])}
'''


@pytest.mark.parametrize("move", ["deep", "grow"])
def test_a_plugin_state_too_deep_or_too_big_is_a_500_and_the_game_is_unchanged(start, tmp_path, move):
    path = tmp_path / "hoarder_games.py"
    path.write_text(HOARDING_PLUGIN)
    live = start(games_file=str(path))
    token = live.create("hoarder")
    live.ok("POST", "/start", token, game_id="hoarder")
    if move == "grow":
        assert live.ok("POST", "/move", token, game_id="hoarder", move="grow")["state"] == {"kept": 1}
    assert_json_error(live.api("POST", "/move", token, game_id="hoarder", move=move), 500)
    assert_json_error(live.api("POST", "/move", token, game_id="hoarder", move=move), 500)
    expected = 1 if move == "grow" else 0
    assert live.ok("GET", "/status", token, game_id="hoarder")["state"] == {"kept": expected}
    live.close()  # compacts: a state that was refused never reaches the snapshot
    again = start(live.data_dir, games_file=str(path))
    assert again.ok("GET", "/status", token, game_id="hoarder")["state"] == {"kept": expected}


def test_starting_again_after_a_move_counts_the_abandoned_game_as_lost(live):
    token = live.create("dodger")
    wins = 0
    while True:  # a first guess of 50 wins one game in a hundred: play on until a game is left open
        live.ok("POST", "/start", token, game_id="random")
        if live.ok("POST", "/move", token, game_id="random", move=50)["outcome"] is None:
            break
        wins += 1
    restarted = live.ok("POST", "/start", token, game_id="random")
    assert restarted["abandoned"] is True
    assert restarted["stats"] == {"win": wins, "lose": 1, "total": wins + 1}


def test_starting_again_before_any_move_costs_nothing(live):
    token = live.create("careful")
    live.ok("POST", "/start", token, game_id="random")
    again = live.ok("POST", "/start", token, game_id="random")
    assert (again["abandoned"], again["stats"]) == (False, {"win": 0, "lose": 0, "total": 0})


# ==========================================================================
# Writes never jam, and the server tells the truth about what it saved
# ==========================================================================

@pytest.fixture
def compacting(srvmod, start, monkeypatch):
    """A server that compacts after every write, its log lines in a list."""
    monkeypatch.setattr(srvmod, "COMPACT_MIN_BYTES", 0)
    monkeypatch.setattr(srvmod, "COMPACT_RETRY_S", 0.05)
    lines = []
    live = start(client_limits=False, log=lines.append)
    return live, lines


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RecursionError("maximum recursion depth exceeded"), MemoryError()],
                         ids=["disk-full", "recursion", "memory"])
def test_a_failing_compaction_is_logged_once_and_never_blocks_a_write(compacting, srvmod, monkeypatch, start,
                                                                      failure):
    live, lines = compacting
    real = srvmod.write_file_atomically

    def failing(path, data):
        if path.endswith("state.json"):
            raise failure
        return real(path, data)
    monkeypatch.setattr(srvmod, "write_file_atomically", failing)
    for i in range(30):
        assert live.post_score(f"w{i}", i).status == 200
        time.sleep(0.01)
    assert live.get("/scores?limit=1").json() == [{"name": "w29", "score": 29}]
    failures = [line for line in lines if "compaction failed" in line]
    assert len(failures) == 1, lines
    monkeypatch.setattr(srvmod, "write_file_atomically", real)
    for i in range(100):  # the retry comes with a write once the backoff is over
        assert live.post_score("after", i).status == 200
        if any("works again" in line for line in lines):
            break
        time.sleep(0.1)
    assert any("works again" in line for line in lines), lines
    live.close()
    assert len(start(live.data_dir).board()) == 30 + min(5, i + 1)


def test_writes_go_on_while_a_compaction_is_writing(compacting, srvmod, monkeypatch, start):
    live, _ = compacting
    real, entered, release = srvmod.write_file_atomically, threading.Event(), threading.Event()

    def slow(path, data):
        if path.endswith("state.json"):
            entered.set()
            release.wait(10)
        return real(path, data)
    monkeypatch.setattr(srvmod, "write_file_atomically", slow)
    for i in range(50):  # until the journal outgrows the snapshot of the first start
        assert live.post_score(f"first{i}", 1).status == 200
        if entered.wait(0.2):
            break
    assert entered.is_set()
    posted = i + 1
    try:
        for i in range(20):  # the snapshot is stuck on its way to disk; writes and reads are not
            assert live.post_score(f"during{i}", i).status == 200
        assert live.get("/scores?limit=1").status == 200
    finally:
        release.set()
    live.close()
    assert len(start(live.data_dir).board()) == posted + 20


@unix_only("Windows refuses to delete a folder whose files a process holds open")
def test_a_data_folder_removed_while_running_gets_503s_and_an_honest_goodbye(spawn, tmp_path):
    data = tmp_path / "data"
    proc = spawn(data, quiet=False)
    assert proc.call("POST", "/score/before", {"score": 1}).status == 200
    shutil.rmtree(data)
    for name in ("lost1", "lost2"):
        assert_json_error(proc.call("POST", f"/score/{name}", {"score": 2}), 503)
    assert proc.call("GET", "/scores").status == 200
    proc.stop()
    out = proc.output()
    assert "Every score is saved" not in out
    assert "NOT everything is saved" in out and "2 change(s) were refused" in out
    assert out.count("was removed or replaced") == 2  # one log line, and the goodbye


def test_a_data_folder_replaced_while_running_is_noticed(start, tmp_path):
    live = start(tmp_path / "data")
    assert live.post_score("before", 1).status == 200
    (tmp_path / "data").rename(tmp_path / "moved-away")
    (tmp_path / "data").mkdir()
    assert_json_error(live.post_score("after", 2), 503)


# ==========================================================================
# Verified runs: the server replays a run and keeps only the score it gives
# ==========================================================================

@pytest.fixture(scope="module")
def sim_config(srvmod):
    return srvmod.read_sim_config()


def take_ticket(live, source=None):
    reply = live.call("POST", "/runs", source=source)
    assert reply.status == 201, reply
    body = reply.json()
    assert set(body) == {"run", "seed"} and 0 <= body["seed"] < 2 ** 32
    return body


def played_run(srvmod, config, ticket, inputs=(), width=600):
    """A run as the page would post it: the score is what the port's replay gives."""
    result = srvmod.replay_run(config, ticket["seed"], width, list(inputs), 10 ** 6)
    assert result["crashed"]
    return {"score": result["score"], "run": ticket["run"], "width": width, "inputs": list(inputs)}


def later(live, seconds):
    """Let ``seconds`` of play pass on the server's clock, as if the child had played that long."""
    app = live.srv.app
    now = app.clock()
    app.clock = lambda: now + seconds


JUMPER = [entry for tick in range(150, 3000, 55) for entry in ([tick, 1, 0], [tick + 8, 0, 0])]


def test_a_replayed_run_is_kept_as_verified_and_can_be_watched(live, srvmod, sim_config):
    ticket = take_ticket(live)
    run = played_run(srvmod, sim_config, ticket, JUMPER)
    later(live, 120)
    reply = live.post("/score/Ada", run)
    assert (reply.status, reply.json()) == (200, {"status": "success", "verified": True})
    player = live.get("/players/Ada").json()
    assert player["rank"] == 1
    assert [(s["score"], s["verified"], s["run"]) for s in player["scores"]] == [(run["score"], True, ticket["run"])]
    row = live.get("/players").json()[0]
    assert (row["name"], row["verified"], row["run"]) == ("Ada", True, ticket["run"])
    watched = live.get("/runs/" + ticket["run"]).json()
    assert {k: watched[k] for k in ("name", "score", "seed", "width", "inputs", "verified")} == {
        "name": "Ada", "score": run["score"], "seed": ticket["seed"], "width": 600, "inputs": run["inputs"],
        "verified": True}
    assert live.board() == [{"name": "Ada", "score": run["score"]}]  # the seed's shape, unchanged


def test_a_forged_score_is_refused_and_the_ticket_stays_good(live, srvmod, sim_config):
    ticket = take_ticket(live)
    run = played_run(srvmod, sim_config, ticket)
    later(live, 60)
    forged = dict(run, score=9_999_999)
    message = assert_json_error(live.post("/score/Mallory", forged), 422)
    assert message == f"the replay of these inputs scores {run['score']}, not 9999999"
    assert live.get("/score/Mallory").status == 404
    assert live.post("/score/Mallory", run).json() == {"status": "success", "verified": True}


def test_inputs_that_do_not_give_the_score_are_refused(live, srvmod, sim_config):
    ticket = take_ticket(live)
    run = played_run(srvmod, sim_config, ticket, JUMPER)
    later(live, 120)
    assert_json_error(live.post("/score/Eve", dict(run, inputs=[])), 422)
    assert live.get("/players").json() == []


def test_a_run_posted_faster_than_it_was_played_is_refused(live, srvmod, sim_config):
    ticket = take_ticket(live)
    run = played_run(srvmod, sim_config, ticket)  # about 4.5 s of play, posted at once
    message = assert_json_error(live.post("/score/Speedy", run), 422)
    assert "faster than it is played" in message
    later(live, 10)
    assert live.post("/score/Speedy", run).status == 200


def test_the_same_run_posted_twice_answers_the_same_and_counts_once(live, srvmod, sim_config):
    ticket = take_ticket(live)
    run = played_run(srvmod, sim_config, ticket)
    later(live, 60)
    first, second = live.post("/score/Twice", run), live.post("/score/Twice", run)
    assert (first.status, first.json()) == (second.status, second.json()) == (200, {"status": "success",
                                                                                   "verified": True})
    assert live.scores_of("Twice") == [run["score"]]
    other = played_run(srvmod, sim_config, ticket, JUMPER)
    assert "already used" in assert_json_error(live.post("/score/Twice", other), 409)


@pytest.mark.parametrize("change, status", [
    ({"run": "no-such-ticket"}, 422), ({"width": 10_000}, 400), ({"inputs": "jump"}, 400),
    ({"inputs": [[5, 1, 0], [5, 0, 0]]}, 422), ({"inputs": [[1, 2, 0]]}, 422),
    ({"inputs": [[t, t % 2, 0] for t in range(20_001)]}, 422)],
    ids=["unknown-ticket", "width", "inputs-not-a-list", "ticks-not-increasing", "key-not-0-or-1", "too-many"])
def test_a_malformed_run_is_refused_saying_which_rule(live, srvmod, sim_config, change, status):
    ticket = take_ticket(live)
    run = dict(played_run(srvmod, sim_config, ticket), **change)
    later(live, 60)
    compact = json.dumps(run, separators=(",", ":"))  # 20,001 key changes still fit in 256 KiB
    assert_json_error(live.post("/score/Shape", compact, headers={"Content-Type": "application/json"}), status)
    assert live.get("/score/Shape").status == 404


def test_tickets_are_limited_per_device(live):
    statuses = [live.call("POST", "/runs", source="127.0.0.2").status for _ in range(21)]
    assert statuses == [201] * 20 + [429]


def test_a_ticket_and_a_verified_run_survive_a_restart(start, srvmod, sim_config, tmp_path):
    live = start(tmp_path / "data")
    ticket = take_ticket(live)
    live.close()
    again = start(tmp_path / "data")
    run = played_run(srvmod, sim_config, ticket, JUMPER)
    later(again, 120)
    assert again.post("/score/Kept", run).json()["verified"] is True
    again.close()
    third = start(tmp_path / "data")
    assert third.get("/runs/" + ticket["run"]).json()["inputs"] == run["inputs"]
    assert third.get("/players/Kept").json()["scores"][0]["verified"] is True


def test_verified_only_refuses_plain_posts_and_hides_unverified_scores(start, srvmod, sim_config, tmp_path):
    live = start(tmp_path / "data")
    assert live.post_score("Curl", 9_999_999).status == 200
    ticket = take_ticket(live)
    run = played_run(srvmod, sim_config, ticket)
    later(live, 60)
    assert live.post("/score/Honest", run).status == 200
    live.close()
    strict = start(tmp_path / "data", verified_only=True)
    message = assert_json_error(strict.post_score("Curl", 5), 403)
    assert "verified" in message
    assert strict.board() == [{"name": "Honest", "score": run["score"]}]
    assert [row["name"] for row in strict.get("/players").json()] == ["Honest"]
    assert strict.get("/score/Curl").status == 404
    strict.close()
    assert len(start(tmp_path / "data").board()) == 2  # hidden, not deleted


def test_the_class_board_ranks_verified_runs_and_keeps_plain_posts_off_it(live, srvmod, sim_config):
    assert live.post_score("Curl", 99_999).json() == {"status": "success"}  # accepted, as the first design says
    assert live.get("/players").json() == []
    assert live.get("/players/Curl").json()["rank"] is None
    assert [(s["score"], s["verified"]) for s in live.get("/players/Curl").json()["scores"]] == [(99_999, False)]
    assert live.get("/score/Curl").json()["scores"] == [99_999]
    assert {"name": "Curl", "score": 99_999} in live.board()
    ticket = take_ticket(live)
    run = played_run(srvmod, sim_config, ticket)
    later(live, 60)
    assert live.post("/score/Honest", run).status == 200
    assert [(row["name"], row["rank"]) for row in live.get("/players").json()] == [("Honest", 1)]
    count_unverified(live)
    assert [row["name"] for row in live.get("/players").json()] == ["Curl", "Honest"]


def test_replays_of_scores_that_dropped_out_are_deleted_at_compaction(start, srvmod, sim_config, tmp_path,
                                                                       monkeypatch):
    live = start(tmp_path / "data", client_limits=False)
    runs = []
    for _ in range(6):  # six verified runs for one player: the worst drops out of the top 5
        ticket = take_ticket(live)
        runs.append((ticket["run"], played_run(srvmod, sim_config, ticket, JUMPER[:2 * len(runs)])))
    later(live, 600)
    for run_id, run in runs:
        assert live.post("/score/Six", run).status == 200
    kept = {s["run"] for s in live.get("/players/Six").json()["scores"]}
    dropped = [run_id for run_id, _ in runs if run_id not in kept]
    assert len(kept) == 5 and len(dropped) == 1
    live.close()  # compacts
    again = start(tmp_path / "data")
    assert again.get("/runs/" + dropped[0]).status == 404
    assert all(again.get("/runs/" + run_id).status == 200 for run_id in kept)
    lines = (tmp_path / "data" / "runs.jsonl").read_bytes().splitlines()
    assert len(lines) == 5


# ==========================================================================
# The teacher: key, moderation, settings, rounds, audit
# ==========================================================================

def teacher_of(live):
    return {"Authorization": f"Bearer {live.srv.app.teacher.key}"}


def admin(live, method, path, body=None):
    return live.call(method, path, body, headers=teacher_of(live))


def count_unverified(live):
    """The teacher's switch for a class on an older page: plain posts count on the board too."""
    reply = admin(live, "PATCH", "/admin/settings", {"count_unverified": True})
    assert reply.status == 200 and reply.json()["count_unverified"] is True, reply


def teacher_link(proc):
    link = re.search(r"Teacher: +(http://\S+/teacher#code=([A-Za-z0-9_-]{20,}))", proc.stdout())
    assert link, proc.stdout()
    return link.group(2)


def sign_in(proc, code):
    return proc.call("POST", "/teacher/session", {"code": code})


def test_the_teacher_key_is_kept_private_and_never_printed(spawn, tmp_path):
    data = tmp_path / "data"
    proc = spawn(data, quiet=False)
    key = json.loads((data / "teacher.json").read_text(encoding="utf-8"))["key"]
    if not WINDOWS:  # mode bits mean nothing there; tests/test_platform.py reads its access list
        assert (data / "teacher.json").stat().st_mode & 0o777 == 0o600
    assert proc.call("GET", "/admin/players", headers={"Authorization": f"Bearer {key}"}).status == 200
    proc.stop()
    assert key not in proc.output()
    again = spawn(data)
    assert json.loads((data / "teacher.json").read_text(encoding="utf-8"))["key"] == key
    again.stop()
    spawn(data, "--new-teacher-key")
    assert json.loads((data / "teacher.json").read_text(encoding="utf-8"))["key"] != key


def test_the_printed_link_signs_in_one_console_once_and_the_session_survives_a_restart(spawn, tmp_path):
    data = tmp_path / "data"
    proc = spawn(data)
    code = teacher_link(proc)
    signed = sign_in(proc, code)
    assert signed.status == 201
    console = {"Authorization": "Bearer " + signed.json()["session"]}
    message = assert_json_error(sign_in(proc, code), 401)  # the same link again: a photo of it is useless
    assert message.startswith("this teacher link was used already or is too old")
    assert "Open on my phone" in message
    assert proc.call("GET", "/admin/players", headers=console).status == 200
    proc.stop()
    again = spawn(data)
    assert teacher_link(again) != code
    assert assert_json_error(sign_in(again, code), 401)
    assert again.call("GET", "/admin/players", headers=console).status == 200
    stored = (data / "teacher.json").read_text(encoding="utf-8")
    assert signed.json()["session"] not in stored and code not in stored


def test_open_on_my_phone_gives_a_fresh_one_time_link_and_everyone_can_be_signed_out(spawn, tmp_path):
    proc = spawn(tmp_path / "data")
    laptop = {"Authorization": "Bearer " + sign_in(proc, teacher_link(proc)).json()["session"]}
    assert assert_json_error(proc.call("POST", "/admin/codes"), 401)
    made = proc.call("POST", "/admin/codes", headers=laptop)
    assert made.status == 201 and made.json()["expires_in"] == 300
    url = made.json()["url"]
    assert url.startswith(proc.url) or "/teacher#code=" in url
    phone_code = url.partition("#code=")[2]
    phone = {"Authorization": "Bearer " + sign_in(proc, phone_code).json()["session"]}
    assert proc.call("GET", "/admin/log", headers=phone).status == 200
    assert proc.call("DELETE", "/admin/sessions", headers=phone).json() == {"status": "success"}
    for console in (laptop, phone):
        assert assert_json_error(proc.call("GET", "/admin/log", headers=console), 401)
    way_back = re.findall(r"New teacher link: \S+/teacher#code=([A-Za-z0-9_-]+)", proc.output())
    assert len(way_back) == 1                               # the teacher's way back in, in the server's window
    assert sign_in(proc, way_back[0]).status == 201


@pytest.mark.parametrize("body", [{}, {"code": 5}, {"code": ""}, {"code": "x" * 129}, [1]])
def test_a_sign_in_without_a_code_is_a_clear_400(live, body):
    assert "code" in assert_json_error(live.call("POST", "/teacher/session", body), 400)


@pytest.mark.parametrize("headers, query", [({}, ""), ({"Authorization": "Bearer wrong"}, ""),
                                            ({}, "?key=KEY"), ({"Cookie": "key=KEY"}, "")],
                         ids=["none", "wrong", "in-query", "in-cookie"])
def test_admin_calls_without_the_key_in_the_header_are_401(live, headers, query):
    key = live.srv.app.teacher.key
    headers = {name: value.replace("KEY", key) for name, value in headers.items()}
    reply = live.call("GET", "/admin/players" + query.replace("KEY", key), headers=headers)
    assert "teacher link" in assert_json_error(reply, 401)


def test_a_hidden_player_vanishes_everywhere_and_comes_back_when_shown(live):
    count_unverified(live)  # plain posts, as from an older page
    live.post_score("Rude", 50)
    live.call("POST", name_path("Kind"), {"score": 40}, source="127.0.0.2")
    assert admin(live, "PATCH", "/admin/players/Rude", {"hidden": True}).json()["hidden"] is True
    assert [row["name"] for row in live.get("/players").json()] == ["Kind"]
    assert live.board() == [{"name": "Kind", "score": 40}]
    assert live.get("/score/Rude").status == 404
    assert live.get("/players/Rude").status == 404
    admin(live, "PATCH", "/admin/players/Rude", {"hidden": False})
    assert [row["name"] for row in live.get("/players").json()] == ["Rude", "Kind"]


def test_teacher_renames_a_player_but_not_onto_another(live):
    live.post_score("Bad Name", 30)
    live.call("POST", name_path("Taken"), {"score": 20}, source="127.0.0.2")
    assert_json_error(admin(live, "PATCH", name_path("Bad Name", "/admin/players/"), {"name": "taken"}), 409)
    row = admin(live, "PATCH", name_path("Bad Name", "/admin/players/"), {"name": "Sam"}).json()
    assert (row["name"], row["scores"]) == ("Sam", [30])
    assert live.scores_of("Sam") == [30]
    assert live.get(name_path("Bad Name")).status == 404


def test_teacher_removes_one_fake_score(live):
    for score in (9_999_999, 40, 35):
        live.post_score("Cheat", score)
    assert admin(live, "DELETE", "/admin/players/Cheat/scores/9999999").json()["scores"] == [40, 35]
    assert live.board() == [{"name": "Cheat", "score": 40}, {"name": "Cheat", "score": 35}]
    assert_json_error(admin(live, "DELETE", "/admin/players/Cheat/scores/9999999"), 404)


def test_hiding_a_device_hides_every_name_it_made(live):
    count_unverified(live)  # plain posts, as from an older page
    for name in ("alt1", "alt2"):
        live.call("POST", name_path(name), {"score": 5}, source="127.0.0.9")
    live.call("POST", name_path("honest"), {"score": 4}, source="127.0.0.10")
    rows = admin(live, "GET", "/admin/players").json()
    device = next(row["device"] for row in rows if row["name"] == "alt1")
    assert re.fullmatch(r"[0-9a-f]{8}", device) and "127" not in device
    assert admin(live, "DELETE", f"/admin/devices/{device}").json() == {"hidden": 2}
    assert [row["name"] for row in live.get("/players").json()] == ["honest"]


def test_new_names_can_be_locked_while_known_players_keep_playing(live):
    live.post_score("Early", 5)
    assert admin(live, "PATCH", "/admin/settings", {"new_names": False}).json()["new_names"] is False
    assert "closed the board to new names" in assert_json_error(live.post_score("Late", 5), 403)
    assert live.post_score("Early", 6).status == 200


@pytest.mark.parametrize("name", ["B.a.d", "baaad", "b a d", "Shit", "sh1t head"])
def test_rude_names_are_refused_without_repeating_the_word(live, name):
    admin(live, "PATCH", "/admin/settings", {"blocked_words": ["bad"]})
    message = assert_json_error(live.post_score(name, 5), 400)
    assert "not allowed" in message and name.lower() not in message.lower()


@pytest.mark.parametrize("name", ["Scunthorpe", "Dickens", "Cassandra", "Po", "Hello Kitty"])
def test_names_that_only_contain_a_rude_word_are_fine(live, name):
    assert live.post_score(name, 5).status == 200


def test_the_filter_can_be_switched_off(live):
    admin(live, "PATCH", "/admin/settings", {"name_filter": False})
    assert live.post_score("Poop", 5).status == 200


def test_suggested_names_are_friendly_and_accepted(live):
    for _ in range(5):
        name = live.get("/names/suggest").json()["name"]
        assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", name)
        assert live.get("/names/check?name=" + quote(name)).status == 200


def test_a_new_round_archives_the_board_and_starts_empty(live):
    count_unverified(live)  # plain posts, as from an older page
    token = live.create("bot")
    live.ok("POST", "/start", token, game_id="random")
    live.post_score("Ann", 30)
    live.call("POST", name_path("Ben"), {"score": 30}, source="127.0.0.2")
    live.call("POST", name_path("Hidden"), {"score": 99}, source="127.0.0.3")
    admin(live, "PATCH", "/admin/players/Hidden", {"hidden": True})
    archived = admin(live, "POST", "/admin/rounds", {"title": "Tuesday"})
    assert archived.status == 201 and archived.json()["players"] == 2
    assert live.board() == [] and live.get("/players").json() == []
    assert live.get("/join").json()["title"] == "Tuesday"
    rounds = live.get("/rounds").json()
    assert [r["id"] for r in rounds] == [1]
    board = live.get("/rounds/1").json()["board"]
    assert [(row["rank"], row["name"], row["best"]) for row in board] == [(1, "Ann", 30), (1, "Ben", 30)]
    csv_reply = live.get("/rounds/1.csv")
    assert csv_reply.headers["Content-Type"].startswith("text/csv")
    assert csv_reply.body.startswith("\ufeff".encode())   # the byte-order mark: Excel reads it as UTF-8
    assert csv_reply.body.decode("utf-8-sig").splitlines() == ["rank,name,best,verified", "1,Ann,30,no",
                                                               "1,Ben,30,no"]
    assert live.ok("GET", "/metrics", token)["user"] == "bot"  # bots and their users stay
    live.post_score("Ann", 12)
    assert live.get("/rounds/current.csv").body.decode().splitlines()[1:] == ["1,Ann,12,no"]


def test_a_page_of_another_origin_cannot_write_but_curl_and_our_pages_can(live):
    other = {"Origin": "http://192.168.1.50:8000"}
    message = assert_json_error(live.call("POST", "/score/Ann", {"score": 5}, headers=other), 403)
    assert message.startswith("a page from another address cannot write to this server")
    assert live.get("/score/Ann").status == 404
    assert assert_json_error(live.call("POST", "/runs", headers={"Origin": "null"}), 403)
    ours = {"Origin": f"http://127.0.0.1:{live.port}"}
    assert live.call("POST", "/score/Ann", {"score": 6}, headers=ours).status == 200
    assert live.call("POST", "/score/Ann", {"score": 7}).status == 200              # curl: no Origin
    assert live.call("GET", "/score/Ann", headers=other).json()["scores"] == [7, 6]  # reads stay open


def test_a_new_round_keeps_plain_posts_in_its_archive_after_the_ranked_runs(live, srvmod, sim_config):
    ticket = take_ticket(live)
    run = played_run(srvmod, sim_config, ticket)
    later(live, 60)
    assert live.post("/score/Honest", run).status == 200
    live.post_score("Curl", 99_999)
    live.post_score("Curl", 5)
    assert admin(live, "POST", "/admin/rounds", {"title": "Next"}).status == 201
    board = live.get("/rounds/1").json()["board"]
    assert [(row["rank"], row["name"], row["verified"], row["scores"]) for row in board] == [
        (1, "Honest", True, [run["score"]]), (None, "Curl", False, [99_999, 5])]
    assert live.get("/rounds/1.csv").body.decode("utf-8-sig").splitlines()[1:] == [
        f"1,Honest,{run['score']},yes", ",Curl,99999,no"]


def test_the_first_round_starts_when_the_server_first_starts(start, tmp_path):
    before = int(time.time())
    live = start(tmp_path / "data")
    started = live.get("/rounds/current").json()["started_at"]
    assert before <= started <= int(time.time()) + 1
    live.close()
    assert start(tmp_path / "data").get("/rounds/current").json()["started_at"] == started  # not moved by a restart


def test_the_csv_keeps_accents_for_a_spreadsheet(live):
    count_unverified(live)
    live.post_score("Chloé", 7)
    body = live.get("/rounds/current.csv").body
    assert body[:3] == b"\xef\xbb\xbf" and "1,Chloé,7,no".encode() in body


def test_a_spreadsheet_never_takes_a_name_for_a_formula(live):
    count_unverified(live)  # plain posts, as from an older page
    live.post_score("=1+1", 5)
    assert live.get("/rounds/current.csv").body.decode().splitlines()[1] == "1,'=1+1,5,no"


def test_every_teacher_action_is_in_the_audit_list_newest_first(live):
    live.post_score("Zed", 5)
    admin(live, "PATCH", "/admin/players/Zed", {"hidden": True})
    admin(live, "PATCH", "/admin/settings", {"new_names": False})
    log = admin(live, "GET", "/admin/log").json()
    assert [(item["action"], item["target"]) for item in log] == [("settings", "new_names=false"), ("hide", "Zed")]
    assert all(isinstance(item["at"], int) for item in log)


def test_teacher_actions_survive_kill_9(spawn, tmp_path):
    data = tmp_path / "data"
    proc = spawn(data)
    key = json.loads((data / "teacher.json").read_text(encoding="utf-8"))["key"]
    auth = {"Authorization": f"Bearer {key}"}
    proc.call("POST", "/score/Rude", {"score": 5})
    assert proc.call("PATCH", "/admin/players/Rude", {"hidden": True}, auth).status == 200
    assert proc.call("PATCH", "/admin/settings", {"new_names": False}, auth).status == 200
    assert proc.call("POST", "/admin/rounds", {"title": "Next"}, auth).status == 201
    proc.kill9()
    again = spawn(data)
    assert again.call("GET", "/rounds").json()[0]["players"] == 0
    assert again.call("GET", "/admin/settings", headers=auth).json()["new_names"] is False
    assert [item["action"] for item in again.call("GET", "/admin/log", headers=auth).json()] == [
        "new round", "settings", "hide"]


def test_join_says_the_address_the_round_and_how_many_are_playing(live):
    live.call("POST", name_path("One"), {"score": 5}, source="127.0.0.2")
    live.call("POST", "/runs", source="127.0.0.3")
    join = live.get("/join").json()
    assert join["url"].startswith("http://") and join["round"] == 1 and join["playing"] == 2


def test_bot_standings_rank_users_by_wins_then_rate_with_public_ids(live):
    strong, weak = live.create("strong"), live.create("weak")
    for token, wins in ((strong, 2), (weak, 1)):
        for _ in range(wins):
            live.ok("POST", "/start", token, game_id="random")
            low, high = 1, 100
            while True:
                guess = (low + high) // 2
                body = live.ok("POST", "/move", token, game_id="random", move=guess)
                if body["outcome"]:
                    break
                low, high = (guess + 1, high) if body["state"]["hint"] == "higher" else (low, guess - 1)
    game = next(g for g in live.get("/standings").json()["games"] if g["id"] == "random")
    assert [(row["user"], row["win"]) for row in game["players"]] == [("strong", 2), ("weak", 1)]
    assert strong not in live.get("/standings").body.decode()


def test_the_log_has_a_line_per_event_and_no_request_lines(spawn, tmp_path):
    events = spawn(tmp_path / "data", quiet=None)
    events.call("POST", "/score/Newbie", {"score": 12})
    events.call("GET", "/scores")
    time.sleep(0.2)
    out = events.output()
    assert "new player 'Newbie'" in out and "score 12 for 'Newbie' (not verified)" in out
    assert "GET /scores" not in out


def test_a_bug_while_applying_a_write_is_a_500_and_never_jams_the_next(live, srvmod, monkeypatch):
    real = srvmod.Leaderboard.add_score

    def broken(self, record):
        if record["name"] == "bug":
            raise RuntimeError("a bug in applying")
        return real(self, record)
    monkeypatch.setattr(srvmod.Leaderboard, "add_score", broken)
    assert_json_error(live.post_score("bug", 1), 500)
    assert live.post_score("fine", 2).status == 200
    live.close()  # returns: nothing waits forever on a writer that never finished


def test_the_listing_cache_is_bounded_in_bytes_however_many_listings_are_asked(unlimited, srvmod, monkeypatch):
    monkeypatch.setattr(srvmod, "LISTING_CACHE_BYTES", 4096)
    for i in range(40):
        unlimited.post_score(f"c{i}", i)
    for offset in range(63):
        assert unlimited.get(f"/scores?offset={offset}").status == 200
    assert 0 < unlimited.srv.app.listings.size <= 4096


def test_a_long_listing_is_streamed_in_chunks_and_arrives_whole(unlimited, srvmod, monkeypatch):
    monkeypatch.setattr(srvmod, "STREAM_ROWS", 5)
    monkeypatch.setattr(srvmod, "LISTING_CACHE_BYTES", 400)  # too long to keep whole: it streams
    for i in range(12):
        unlimited.post_score(f"s{i}", i)
    conn = RawConnection(unlimited.port)
    try:
        conn.send(b"GET /scores HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = conn.response()
    finally:
        conn.close()
    assert reply.status == 200 and "Content-Length" not in reply.headers
    assert [row["score"] for row in json.loads(reply.body)] == list(range(11, -1, -1))
    assert len(unlimited.get("/scores?limit=5").json()) == 5  # short ones still come whole, cached


def test_a_long_listing_that_fits_the_cache_is_sent_whole_and_kept(unlimited, srvmod, monkeypatch):
    monkeypatch.setattr(srvmod, "STREAM_ROWS", 5)
    for i in range(12):
        unlimited.post_score(f"k{i}", i)
    first, second = unlimited.get("/scores"), unlimited.get("/scores")
    assert int(first.headers["Content-Length"]) == len(first.body) and len(first.json()) == 12
    assert second.body == first.body


def test_runs_are_found_by_id_even_when_every_id_has_the_same_hash(srvmod, monkeypatch, tmp_path):
    # The index keeps hashes, not ids; with every hash equal only the id on each line tells them apart.
    monkeypatch.setattr(srvmod, "hash", lambda run_id: 7, raising=False)
    replays = srvmod.Replays(str(tmp_path), log=print)
    for i in range(20):
        replays.add({"id": f"run-{i}", "name": f"p{i}", "score": i, "seed": 1, "width": 600, "inputs": []})
        replays.done(f"run-{i}")
    assert [replays.read(f"run-{i}")["score"] for i in range(20)] == list(range(20))
    assert replays.read("run-20") is None
    replays.keep([f"run-{i}" for i in range(0, 20, 2)])
    assert [replays.read(f"run-{i}") is not None for i in range(4)] == [True, False, True, False]
    replays.close()
    again = srvmod.Replays(str(tmp_path), log=print)
    assert [again.read(f"run-{i}")["score"] for i in range(0, 20, 2)] == list(range(0, 20, 2))
    assert again.read("run-1") is None
    assert len((tmp_path / "runs.jsonl").read_bytes().splitlines()) == 10
    again.close()


def test_a_snapshot_in_the_first_layout_still_loads_with_its_runs_and_origins(srvmod):
    # Before runs and origins were flat lists: [seq, run id] pairs and [name index, device, at] triples.
    board = srvmod.Leaderboard(on_change=lambda: None)
    board.load_snapshot({"names": ["Ada", "bo"], "entries": [0, 90, 3, 1, 80, 2, 0, 70, 1],
                         "runs": [[3, "run-a"]], "hidden": [],
                         "origins": [[0, "0000abcd", 1_700_000_000], [1, "00001234", 1_700_000_100]]})
    assert board.kept_scores("ada") == [(90, "run-a"), (70, None)]
    assert board.kept_scores("bo") == [(80, None)]
    row = board.picture().moderation_row("ada")
    assert (row["name"], row["device"], row["created_at"]) == ("Ada", "0000abcd", 1_700_000_000)
    # Saved again, it is the flat layout, and loads back to the same board.
    saved = srvmod.Leaderboard.snapshot_from_parts(board.snapshot_parts())
    assert saved["runs"] == ["run-a", None, None]
    assert len(saved["origins"]) == 2 and all(isinstance(origin, int) for origin in saved["origins"])
    again = srvmod.Leaderboard(on_change=lambda: None)
    again.load_snapshot(json.loads(json.dumps(saved)))
    assert again.kept_scores("ada") == [(90, "run-a"), (70, None)]
    assert again.picture().moderation_row("bo")["device"] == "00001234"


def test_a_restart_indexes_runs_jsonl_and_drops_a_torn_last_line(start, srvmod, sim_config, tmp_path):
    live = start(tmp_path / "data")
    ticket = take_ticket(live)
    run = played_run(srvmod, sim_config, ticket)
    later(live, 60)
    assert live.post("/score/Torn", run).status == 200
    live.close()
    with open(tmp_path / "data" / "runs.jsonl", "ab") as file:
        file.write(b'{"id":"half-written","na')
    again = start(tmp_path / "data")
    assert again.get("/runs/" + ticket["run"]).json()["score"] == run["score"]
    assert (tmp_path / "data" / "runs.jsonl").read_bytes().endswith(b"\n")
