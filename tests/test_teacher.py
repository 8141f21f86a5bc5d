"""The teacher's console /teacher, the game page's name picker, and /bots, in a real browser.

The teacher runs the class from a phone with nothing but the link the server
printed at start: it carries a one-time code, which the console exchanges
for a session kept on that device. These tests open that link in a
phone-sized window and check what the teacher, the projector and a child at
a shared tablet then see.

DINO_SCREENSHOTS=1 also refreshes docs/teacher.png and docs/name-picker.png;
without it the pictures go to a temporary folder, so a test run leaves the tree as it was.
"""

import codecs
import csv
import importlib
import io
import json
import os
import re
import time
import urllib.parse
from pathlib import Path

from conftest import (DESKTOP, LIVE_MS, PHONE, another_device, call, count_unverified, eventually, expect, http,
                      post_score, same_origin, scores_of)
from test_board import decode_qr

DOCS = Path(__file__).resolve().parent.parent / "docs"
SAVE_DOCS = os.environ.get("DINO_SCREENSHOTS") == "1"   # refresh docs/*.png; otherwise they go to a temp folder
PROJECTOR = {"viewport": {"width": 1920, "height": 1080}, "device_scale_factor": 1}
PHONE_SHOT = dict(PHONE, device_scale_factor=2)   # docs/*.png at 780x1688, as docs/phone.png
HIDE_MS = 1000                                     # a hidden name leaves the projector within a second
ROUND_CHECK_MS = 8000                              # the game page asks for the round at most every 5 s
NOTICES_MS = 8000                                  # the console asks about asking devices every 5 s
KEY_MESSAGE = "Open the teacher link printed when the server started"
USED_LINK = "this teacher link was used already or is too old"
BEN_PHONE = {"Player-Key": "ben-phone-secret-0123456789abcdef"}
TOM_PHONE = {"Player-Key": "tom-phone-secret-0123456789abcdef"}


# ---------------------------------------------------------------- helpers

def teacher_key(server):
    """The key, for scripts on the teacher's own machine: in teacher.json, never printed."""
    return json.loads((server.data_dir / "teacher.json").read_text(encoding="utf-8"))["key"]


def admin(server, method, path, body=None):
    return server.call(method, path, body, headers={"Authorization": "Bearer " + teacher_key(server)})


def teacher_link(server):
    """The path of the newest teacher link the server printed: /teacher#code=<a one-time code>."""
    links = re.findall(r"Teacher: +http://\S+?(/teacher#code=[A-Za-z0-9_-]+)", server.output())
    assert links, f"no teacher link in the server's banner:\n{server.output()}"
    return links[-1]


def open_teacher(open_tab, server, link=None, **context_options):
    """The console signed in with the banner's link (or ``link``), in a phone unless told otherwise."""
    tab = open_tab(link or teacher_link(server), **(context_options or PHONE))
    expect(tab.page.locator("#players-count")).not_to_have_text("")
    return tab


def signed_out(page):
    expect(page.locator("#key-problem")).to_be_visible()
    expect(page.locator("#console")).to_be_hidden()


def player_row(page, name):
    return page.locator("#players li.player").filter(has=page.locator(".name", has_text=name))


def open_player(page, name):
    """The player's row with its panel (scores, rename, device) open."""
    row = player_row(page, name)
    row.locator("summary").click()
    return row


def board_names(page):
    return page.locator("#leaderboard .name")


def assert_clean(tab, server):
    assert tab.console_errors == []
    assert tab.page_errors == []
    assert tab.csp_violations() == []
    assert [url for url in tab.requests if not same_origin(server, url)] == []


def post_as(server, name, score, device):
    """A post from a child's page, which sends its own secret as Player-Key."""
    return call(server.port, "POST", "/score/" + urllib.parse.quote(name, safe=""), {"score": score},
                headers=device, source=another_device())


def post_verified_run(server, name):
    """A run played from a ticket and posted once it could have ended; returns (score, run id)."""
    dino = importlib.import_module("server")
    ticket = server.call("POST", "/runs").json()
    config = dino.read_sim_config()
    played = dino.replay_run(config, ticket["seed"], 600, [], 10 ** 6)
    # the server takes a run no faster than it is played, less its slack: here a T-Rex that never jumps
    time.sleep(max(0.0, played["ticks"] / config["ticksPerSecond"] - dino.RUN_SLACK_S + 0.3))
    reply = server.call("POST", "/score/" + urllib.parse.quote(name, safe=""),
                        {"score": played["score"], "run": ticket["run"], "width": 600, "inputs": []})
    assert (reply.status, reply.json()) == (200, {"status": "success", "verified": True}), reply
    return played["score"], ticket["run"]


def boxes_overlap(a, b):
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


# ================================================================ signing in

def test_the_link_signs_in_and_leaves_the_address_bar_before_the_exchange_ends(server, open_tab):
    post_score(server, "Bea", 300)
    exchanges = []
    tab = open_tab(teacher_link(server), before_load=lambda page: page.route("**/teacher/session",
                                                                   lambda route: exchanges.append(route)), **PHONE)
    page = tab.page
    for _ in range(100):             # until the page has asked for its session
        if exchanges:
            break
        page.wait_for_timeout(50)
    assert len(exchanges) == 1
    assert "code" not in page.evaluate("location.href") and page.url == server.url + "/teacher"
    exchanges[0].continue_()
    expect(player_row(page, "Bea")).to_contain_text("best 300")
    expect(page.locator("#key-problem")).to_be_hidden()
    assert_clean(tab, server)


def test_closing_the_tab_keeps_the_console_signed_in_on_that_device(server, open_tab):
    post_score(server, "Bea", 300)
    first = open_teacher(open_tab, server)
    expect(player_row(first.page, "Bea")).to_be_visible()
    first.page.close()
    again = open_tab("/teacher", **PHONE).page           # the same browser, a new tab, no link
    expect(player_row(again, "Bea")).to_contain_text("best 300")
    expect(again.locator("#key-problem")).to_be_hidden()


def test_a_used_link_on_another_device_shows_why_and_where_to_get_a_new_one(server, open_tab):
    post_score(server, "Bea", 300)
    link = teacher_link(server)
    open_teacher(open_tab, server, link)
    thief = open_tab(link, **DESKTOP).page                # a photo of the terminal, typed in later
    signed_out(thief)
    why = thief.locator("#key-problem-why")
    expect(why).to_contain_text(USED_LINK)
    expect(why).to_contain_text("Open on my phone")
    expect(thief.locator("#key-problem")).to_contain_text(KEY_MESSAGE)
    expect(thief.get_by_text("Bea")).to_have_count(0)
    assert "code" not in thief.url


def test_the_console_stays_signed_in_across_a_server_restart(server, open_tab):
    post_score(server, "Bea", 300)
    page = open_teacher(open_tab, server).page
    server.stop()
    server.start()
    page.reload()
    expect(player_row(page, "Bea")).to_contain_text("best 300")
    expect(page.locator("#key-problem")).to_be_hidden()


def test_an_old_key_link_still_signs_in_and_leaves_the_address_bar(server, open_tab):
    post_score(server, "Bea", 300)
    page = open_teacher(open_tab, server, "/teacher#key=" + teacher_key(server)).page
    expect(player_row(page, "Bea")).to_be_visible()
    assert "key" not in page.evaluate("location.href")


def test_open_on_my_phone_shows_a_qr_code_that_signs_in_one_phone_once(server, open_tab, tmp_path):
    post_score(server, "Bea", 300)
    laptop = open_teacher(open_tab, server, **DESKTOP)
    page = laptop.page
    page.get_by_role("button", name="Open on my phone").click()
    dialog = page.locator("dialog#phone")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#phone-left")).to_have_text(re.compile(r"^[45]:[0-5][0-9]$"))
    dialog.locator("#phone-qr").screenshot(path=str(tmp_path / "qr.png"))
    url = decode_qr(tmp_path / "qr.png")
    assert url.startswith(server.url + "/teacher#code="), url
    expect(dialog.locator("#phone-url")).to_have_text(url)
    phone = open_teacher(open_tab, server, url.removeprefix(server.url), **PHONE).page
    expect(player_row(phone, "Bea")).to_be_visible()
    again = open_tab(url.removeprefix(server.url), **PROJECTOR).page      # the same code a second time
    signed_out(again)
    expect(again.locator("#key-problem-why")).to_contain_text(USED_LINK)
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    assert_clean(laptop, server)


def test_the_phone_code_closes_itself_when_it_runs_out(server, open_tab):
    tab = open_tab(teacher_link(server), before_load=lambda page: page.clock.install(), **DESKTOP)
    page = tab.page
    expect(page.locator("#players-count")).not_to_have_text("")
    page.get_by_role("button", name="Open on my phone").click()
    expect(page.locator("dialog#phone")).to_be_visible()
    page.clock.fast_forward("05:01")
    expect(page.locator("dialog#phone")).to_be_hidden()
    expect(page.locator("#undo-bar")).to_contain_text("ran out")
    expect(page.locator("#phone-url")).to_have_text("")   # the dialog's close event clears it, a task later


def test_signing_out_every_device_signs_out_this_console_and_the_others(server, open_tab):
    laptop = open_teacher(open_tab, server, **DESKTOP).page
    phone_link = admin(server, "POST", "/admin/codes").json()["url"].removeprefix(server.url)
    phone = open_teacher(open_tab, server, phone_link, **PHONE).page
    phone.get_by_role("button", name="Sign out every device…").click()
    dialog = phone.locator("dialog#confirm")
    expect(dialog).to_contain_text("Sign out every teacher console, this one too?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(phone.locator("#console")).to_be_visible()

    phone.get_by_role("button", name="Sign out every device…").click()
    dialog.get_by_role("button", name="Sign out everyone").click()
    signed_out(phone)
    expect(phone.locator("#key-problem")).to_contain_text("Every teacher console is signed out")
    laptop.reload()
    signed_out(laptop)
    phone.reload()
    signed_out(phone)
    assert admin(server, "GET", "/admin/players").status == 200     # the key in teacher.json still works


# ================================================================ the teacher's console

def test_hiding_a_rude_name_takes_it_off_an_open_board_within_a_second_and_undo_brings_it_back(server, open_tab):
    count_unverified(server)  # seeded with plain posts, as from an older page
    post_score(server, "Bea", 300)
    post_score(server, "Smelly Pants", 9000)
    board = open_tab("/board", **PROJECTOR).page
    expect(board_names(board)).to_have_text(["Smelly Pants", "Bea"])
    expect(board.locator("#live")).to_have_text("Live")
    teacher = open_teacher(open_tab, server).page

    player_row(teacher, "Smelly Pants").get_by_role("button", name="Hide Smelly Pants").click()
    expect(board_names(board)).to_have_text(["Bea"], timeout=HIDE_MS)
    expect(player_row(teacher, "Smelly Pants")).to_contain_text("hidden")
    expect(teacher.locator("#undo-bar")).to_contain_text("Smelly Pants is hidden")

    teacher.locator("#undo-bar").get_by_role("button", name="Undo").click()
    expect(board_names(board)).to_have_text(["Smelly Pants", "Bea"], timeout=LIVE_MS)
    expect(player_row(teacher, "Smelly Pants").get_by_role("button", name="Hide Smelly Pants")).to_be_visible()


def test_removing_a_fake_score_asks_first_then_keeps_the_real_ones(server, open_tab):
    post_score(server, "Rutu", 533)
    post_score(server, "Rutu", 99999)
    page = open_teacher(open_tab, server).page
    row = open_player(page, "Rutu")
    row.get_by_role("button", name="Remove 99,999").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_contain_text("Remove the score 99,999 from Rutu?")
    dialog.get_by_role("button", name="Cancel").click()
    assert scores_of(server, "Rutu") == [99999, 533]

    row.get_by_role("button", name="Remove 99,999").click()
    dialog.get_by_role("button", name="Remove score").click()
    expect(row).to_contain_text("best 533")
    expect(row.get_by_role("button", name="Remove 99,999")).to_have_count(0)
    assert scores_of(server, "Rutu") == [533]


def test_renaming_to_another_players_name_shows_the_servers_reason(server, open_tab):
    post_score(server, "Bea", 300)
    post_score(server, "Rutu", 200)
    page = open_teacher(open_tab, server).page
    row = open_player(page, "Rutu")
    row.get_by_label("New name").fill("Bea")
    row.get_by_role("button", name="Rename").click()
    expect(row.locator(".panel .error")).not_to_be_empty()
    assert scores_of(server, "Rutu") == [200]

    row.get_by_label("New name").fill("Ruth")
    row.get_by_role("button", name="Rename").click()
    expect(player_row(page, "Ruth")).to_contain_text("best 200")
    assert scores_of(server, "Ruth") == [200]


def test_locking_new_names_refuses_a_newcomer_but_not_a_player_already_on_the_board(server, open_tab):
    post_score(server, "Bea", 300)
    page = open_teacher(open_tab, server).page
    switch = page.get_by_label("New names may join")
    expect(switch).to_be_checked()
    switch.uncheck()
    eventually(lambda: admin(server, "GET", "/admin/settings").json()["new_names"] is False, 3,
               "the server has new names locked")
    newcomer = server.call("POST", "/score/Zed", {"score": 10}, source="127.0.3.1")
    assert newcomer.status == 403, newcomer
    assert server.call("POST", "/score/Bea", {"score": 10}, source="127.0.3.2").status == 200
    page.reload()
    expect(page.get_by_label("New names may join")).not_to_be_checked()


def test_a_new_round_asks_first_then_the_last_rounds_csv_downloads_with_its_rows(server, open_tab):
    count_unverified(server)  # seeded with plain posts, as from an older page
    for name, score in [("Bea", 600), ("Rutu", 533), ("Cy", 341)]:
        post_score(server, name, score)
    page = open_teacher(open_tab, server).page
    expect(page.locator("#no-rounds")).to_be_visible()
    page.get_by_label("Title of the new round").fill("Friday lunch race")
    page.get_by_role("button", name="New round…").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_contain_text("Friday lunch race")
    dialog.get_by_role("button", name="Cancel").click()
    assert http(server.url, "GET", "/rounds")[1] == []
    assert len(http(server.url, "GET", "/players")[1]) == 3

    page.get_by_role("button", name="New round…").click()
    dialog.get_by_role("button", name="Start new round").click()
    rounds = page.locator("#rounds li")
    expect(rounds).to_have_count(1)
    assert http(server.url, "GET", "/players")[1] == []
    assert http(server.url, "GET", "/join")[1]["title"] == "Friday lunch race"

    with page.expect_download() as download:
        rounds.first.get_by_role("link").click()
    raw = Path(download.value.path()).read_bytes()
    assert raw.startswith(codecs.BOM_UTF8), "Excel needs the byte-order mark to read the file as UTF-8"
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert table[0] == ["rank", "name", "best", "verified"]
    assert [row[:3] for row in table[1:]] == [["1", "Bea", "600"], ["2", "Rutu", "533"], ["3", "Cy", "341"]]


def test_hiding_a_device_hides_every_name_it_posted_and_undo_shows_them_again(server, open_tab):
    count_unverified(server)  # seeded with plain posts, as from an older page
    for name in ["Spam One", "Spam Two"]:            # one device, two silly names
        assert server.call("POST", "/score/" + urllib.parse.quote(name), {"score": 5000},
                           source="127.0.3.9").status == 200
    post_score(server, "Bea", 300)
    page = open_teacher(open_tab, server).page
    row = open_player(page, "Spam One")
    row.get_by_role("button", name="Hide every name from this device").click()
    expect(page.locator("#undo-bar")).to_contain_text("Hid 2 names")
    assert [row["name"] for row in http(server.url, "GET", "/players")[1]] == ["Bea"]
    expect(player_row(page, "Spam Two")).to_contain_text("hidden")

    page.locator("#undo-bar").get_by_role("button", name="Undo").click()
    expect(player_row(page, "Spam Two")).not_to_contain_text("hidden")
    assert sorted(row["name"] for row in http(server.url, "GET", "/players")[1]) == ["Bea", "Spam One", "Spam Two"]


def test_a_word_the_teacher_blocks_is_refused_in_names_until_unblocked(server, open_tab):
    page = open_teacher(open_tab, server).page
    name_filter = page.get_by_label("Name filter")
    if not name_filter.is_checked():
        name_filter.check()
        expect(page.locator("#undo-bar")).to_contain_text("Name filter: on")
    assert http(server.url, "GET", "/names/check?name=Zonk%20Master")[0] == 200
    page.get_by_label("A word to block").fill("zonk")
    page.get_by_role("button", name="Block", exact=True).click()
    expect(page.locator("#words")).to_contain_text("zonk")
    assert http(server.url, "GET", "/names/check?name=Zonk%20Master")[0] == 400

    page.get_by_role("button", name="Stop blocking zonk").click()
    expect(page.locator("#words")).not_to_contain_text("zonk")
    assert http(server.url, "GET", "/names/check?name=Zonk%20Master")[0] == 200


def test_every_step_shows_in_the_log(server, open_tab):
    post_score(server, "Smelly Pants", 9000)
    page = open_teacher(open_tab, server).page
    expect(page.locator("#no-log")).to_be_visible()
    player_row(page, "Smelly Pants").get_by_role("button", name="Hide Smelly Pants").click()
    expect(page.locator("#log li")).to_have_count(1)
    expect(page.locator("#log li").first).to_contain_text("Smelly Pants")


def test_a_name_moves_to_the_device_that_asked_for_it_and_can_be_released(server, open_tab):
    assert post_as(server, "Ben", 50, BEN_PHONE).status == 200          # Ben's old phone keeps the name
    assert post_as(server, "ben", 60, TOM_PHONE).status == 409          # his new phone is refused, and asks
    page = open_teacher(open_tab, server).page
    expect(page.locator("#asking")).to_contain_text("A device asks for the name Ben")
    claim = page.locator("#asked > li").filter(has_text="Ben")
    expect(claim).to_contain_text("as “ben”")
    claim.get_by_role("button", name="Move here").click()
    expect(page.locator("#undo-bar")).to_contain_text("Ben now belongs to device")
    expect(page.locator("#asking")).to_be_hidden()
    assert post_as(server, "Ben", 70, TOM_PHONE).status == 200
    assert post_as(server, "Ben", 80, BEN_PHONE).status == 409          # now the old phone asks
    expect(page.locator("#asking")).to_be_visible(timeout=NOTICES_MS)

    page.get_by_role("button", name="Release Ben").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_contain_text("Release Ben?")
    dialog.get_by_role("button", name="Cancel").click()
    assert post_as(server, "Ben", 90, BEN_PHONE).status == 409
    page.get_by_role("button", name="Release Ben").click()
    dialog.get_by_role("button", name="Release", exact=True).click()
    expect(page.locator("#no-claims")).to_be_visible()
    assert post_as(server, "Ben", 100, BEN_PHONE).status == 200
    assert scores_of(server, "Ben") == [100, 70, 50]


def test_a_device_asking_while_the_console_is_open_shows_up_by_itself(server, open_tab):
    assert post_as(server, "Ben", 50, BEN_PHONE).status == 200
    page = open_teacher(open_tab, server).page
    expect(page.locator("#no-claims")).to_be_hidden()
    expect(page.locator("#asking")).to_be_hidden()
    page.locator("#all-claims summary").click()
    expect(page.locator("#claims")).to_contain_text("Ben")
    assert post_as(server, "Ben", 60, TOM_PHONE).status == 409
    expect(page.locator("#asking")).to_be_visible(timeout=NOTICES_MS)
    expect(page.locator("#asked").get_by_role("button", name="Move here")).to_have_count(1)


def test_new_names_held_by_the_class_rate_are_let_in_with_one_tap(server, open_tab):
    rate = admin(server, "GET", "/admin/held").json()["rate"]
    for i in range(rate["names"]):                  # a whole class's worth of new names in a minute
        post_score(server, f"Kid {i}", 10)
    late = server.call("POST", "/score/Zed", {"score": 10}, source=another_device())
    assert late.status == 429, late
    page = open_teacher(open_tab, server).page
    held = page.locator("#held")
    expect(held).to_contain_text("1 new name is waiting (class rate: 60 new names a minute): Zed")
    held.get_by_role("button", name="Let them in").click()
    expect(held).to_contain_text("New names may join past the class rate until")
    expect(held.get_by_role("button", name="Let them in")).to_be_hidden()
    assert server.call("POST", "/score/Zed", {"score": 10}, source=another_device()).status == 200


def test_each_score_shows_whether_it_was_verified_and_a_verified_run_can_be_watched(server, open_tab):
    score, run = post_verified_run(server, "Ada")
    post_score(server, "Ada", 99999)                                   # a curl post: kept, not verified
    page = open_teacher(open_tab, server).page
    row = open_player(page, "Ada")
    expect(row.locator(".facts")).to_have_text("best 99,999 · 2 scores kept, 1 verified")
    items = row.locator(".scores li")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("99,999")
    expect(items.nth(0)).to_contain_text("not verified")
    expect(items.nth(0).get_by_role("link")).to_have_count(0)
    expect(items.nth(1)).to_contain_text(f"{score:,}")
    expect(items.nth(1)).to_contain_text("\u2713 verified")
    watch = items.nth(1).get_by_role("link", name="Watch Ada’s run")
    assert watch.get_attribute("href") == "/?watch=" + urllib.parse.quote(run, safe="")
    game = open_tab(watch.get_attribute("href"), **PHONE).page
    expect(game.locator("#watch-title")).to_contain_text("Ada")


def test_the_count_unverified_switch_puts_plain_posts_on_the_board(server, open_tab):
    post_score(server, "Bea", 300)
    assert http(server.url, "GET", "/players")[1] == []               # by default the board ranks verified runs
    page = open_teacher(open_tab, server).page
    switch = page.get_by_label("Count unverified scores on the board")
    expect(switch).not_to_be_checked()
    expect(page.locator("#switches-card")).to_contain_text("Off: the board ranks only runs the server replayed")
    switch.check()
    expect(page.locator("#undo-bar")).to_contain_text("Count unverified scores on the board: on")
    eventually(lambda: [row["name"] for row in http(server.url, "GET", "/players")[1]] == ["Bea"], 3,
               "Bea is on the board")


def test_on_a_phone_the_class_controls_come_first_and_the_undo_bar_covers_no_player(server, open_tab):
    for i in range(12):
        post_score(server, f"Player {i:02}", 1000 - i)
    page = open_teacher(open_tab, server).page
    expect(page.locator("#players li.player")).to_have_count(12)
    screen = PHONE["viewport"]["height"]
    players_top = page.locator("#players-card").bounding_box()["y"]
    for control in (page.get_by_role("button", name="New round…"), page.get_by_role("link", name="Download CSV"),
                    page.get_by_label("Count unverified scores on the board")):
        box = control.bounding_box()
        assert box["y"] + box["height"] <= screen and box["y"] < players_top, control

    player_row(page, "Player 07").get_by_role("button", name="Hide Player 07").click()
    bar = page.locator("#undo-bar")
    expect(bar).to_contain_text("Player 07 is hidden")
    height = page.evaluate("document.documentElement.scrollHeight")
    lines = page.locator("#players .line, #players summary").all()
    assert lines
    for top in range(0, height, screen // 3):            # wherever the teacher has scrolled to
        page.evaluate(f"window.scrollTo(0, {top})")
        covered = [line.text_content() for line in lines if boxes_overlap(bar.bounding_box(), line.bounding_box())]
        assert covered == [], f"scrolled to {top}"
    row = player_row(page, "Player 07").locator(".line").bounding_box()
    assert 0 <= bar.bounding_box()["y"] - (row["y"] + row["height"]) < 120, "the undo bar is beside its step"


def test_a_wrong_key_gets_the_clear_message(server, open_tab):
    post_score(server, "Bea", 300)
    tab = open_tab("/teacher#key=not-the-key", **PHONE)
    page = tab.page
    expect(page.locator("#key-problem")).to_be_visible()
    expect(page.locator("#key-problem")).to_contain_text(KEY_MESSAGE)
    expect(page.locator("#console")).to_be_hidden()
    expect(page.get_by_text("Bea")).to_have_count(0)
    assert "not-the-key" not in page.url


def test_no_key_at_all_gets_the_clear_message(server, open_tab):
    page = open_tab("/teacher", **PHONE).page
    expect(page.locator("#key-problem")).to_contain_text(KEY_MESSAGE)
    expect(page.locator("#console")).to_be_hidden()
    assert server.call("GET", "/admin/players").status == 401


def screenshot_path(tmp_path, name):
    return DOCS / name if SAVE_DOCS else tmp_path / name


def test_the_console_fits_a_phone_runs_clean_and_names_stay_text(server, open_tab, tmp_path):
    for name, score in [("Bea", 600), ("Rutu", 533), ("<img src=x onerror=alert(1)>", 341), ("Cy", 212)]:
        post_score(server, name, score)
    admin(server, "PATCH", "/admin/players/Cy", {"hidden": True})
    tab = open_teacher(open_tab, server, **PHONE_SHOT)
    page = tab.page
    expect(page.locator("#players li.player")).to_have_count(4)
    expect(player_row(page, "<img src=x")).to_be_visible()
    assert page.locator("#players img").count() == 0
    open_player(page, "Rutu")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width == 390, "the console scrolls sideways on a phone"
    small = page.locator("button:visible").evaluate_all(
        "buttons => buttons.filter(b => b.getBoundingClientRect().height < 36).map(b => b.textContent)")
    assert small == []
    page.evaluate("window.scrollTo(0, 0)")   # the first screen: the round's buttons and the switches
    page.screenshot(path=str(screenshot_path(tmp_path, "teacher.png")))
    page.wait_for_timeout(300)
    assert tab.dialogs == []
    assert_clean(tab, server)


# ================================================================ the game page's name field

def test_pick_a_name_fills_the_field_with_a_name_the_server_accepts(server, open_tab, tmp_path):
    tab = open_tab("/", **PHONE_SHOT)
    page = tab.page
    field = page.get_by_label("Name", exact=True)
    expect(field).to_have_value("")
    page.get_by_role("button", name="Pick a name for me").click()
    expect(field).not_to_have_value("")
    name = field.input_value()
    key = page.evaluate("localStorage.getItem('dino-player-key')")
    check = "/names/check?name=" + urllib.parse.quote(name)
    assert server.call("GET", check, headers={"Player-Key": key}).json() == {"name": name, "yours": False}
    assert server.call("GET", check).status == 409      # held for this phone, not for another device
    expect(page.locator("#name-error")).to_be_empty()
    page.wait_for_timeout(400)              # past the field's own check
    expect(page.locator("#name-error")).to_be_empty()
    page.locator("aside.board").screenshot(path=str(screenshot_path(tmp_path, "name-picker.png")))
    # the name is kept, like a typed one
    page.reload()
    expect(page.get_by_label("Name", exact=True)).to_have_value(name)
    assert_clean(tab, server)


def test_after_a_new_round_the_game_page_asks_whether_it_is_still_the_same_child(server, open_tab):
    tab = open_tab("/", **PHONE)
    page = tab.page
    field = page.get_by_label("Name", exact=True)
    field.fill("Bea")
    page.wait_for_function("localStorage.getItem('dino.nameRound') !== null")   # the page knows the round
    assert admin(server, "POST", "/admin/rounds", {"title": "After lunch"}).status == 201

    question = page.locator("#still-name")
    expect(question).to_contain_text("Still Bea?", timeout=ROUND_CHECK_MS)
    expect(field).to_have_value("")          # until someone answers, no score goes to Bea
    question.get_by_role("button", name="No").click()
    expect(question).to_be_hidden()
    expect(field).to_have_value("")
    expect(field).to_be_focused()

    page.reload()                            # the next child at the tablet finds no name either
    expect(page.get_by_label("Name", exact=True)).to_have_value("")
    assert_clean(tab, server)


def test_the_same_child_keeps_their_name_with_one_tap_after_a_new_round(server, open_tab):
    tab = open_tab("/", **PHONE)
    page = tab.page
    page.get_by_label("Name", exact=True).fill("Rutu")
    page.wait_for_function("localStorage.getItem('dino.nameRound') !== null")
    assert admin(server, "POST", "/admin/rounds", {"title": "After lunch"}).status == 201
    page.reload()                            # a tablet picked up after the round changed
    question = page.locator("#still-name")
    expect(question).to_contain_text("Still Rutu?")
    question.get_by_role("button", name="Yes, that's me").click()
    expect(question).to_be_hidden()
    expect(page.get_by_label("Name", exact=True)).to_have_value("Rutu")
    page.reload()
    expect(page.get_by_label("Name", exact=True)).to_have_value("Rutu")
    page.wait_for_timeout(300)
    expect(page.locator("#still-name")).to_be_hidden()


# ================================================================ /bots

def test_bot_standings_rank_by_wins_then_rate_and_link_back_to_the_board(server, open_tab):
    standings = {"games": [{"id": "rps", "name": "Rock paper scissors", "players": [
        {"id": "u19c2", "user": "beta", "win": 12, "lose": 5, "total": 17, "rate": 0.7059},
        {"id": "u0001", "user": "<b>gamma</b>", "win": 2, "lose": 9, "total": 11, "rate": 0.1818},
        {"id": "u7f3a", "user": "alpha", "win": 12, "lose": 3, "total": 15, "rate": 0.8}]},
        {"id": "ttt", "name": "Tic-tac-toe", "players": []}]}

    def serve_standings(page):
        page.route("**/standings", lambda route: route.fulfill(status=200, content_type="application/json",
                                                               body=json.dumps(standings)))
    tab = open_tab("/bots", before_load=serve_standings, **PROJECTOR)
    page = tab.page
    rps = page.locator("section.game", has_text="Rock paper scissors")
    expect(rps.locator("tbody tr")).to_have_count(3)
    rows = rps.locator("tbody tr").evaluate_all(
        "rows => rows.map(tr => [...tr.cells].map(td => td.firstChild.textContent))")
    assert rows == [["1", "alpha", "12", "3", "15", "80%"], ["2", "beta", "12", "5", "17", "71%"],
                    ["3", "<b>gamma</b>", "2", "9", "11", "18%"]]
    expect(rps.locator("tbody tr").first).to_contain_text("u7f3a")
    expect(page.locator("section.game", has_text="Tic-tac-toe")).to_contain_text("No bot has played yet")
    font = rps.locator("tbody td").first.evaluate("td => parseFloat(getComputedStyle(td).fontSize)")
    assert font >= 36, "too small for the back of the room"
    page.get_by_role("link", name="Back to the board").click()
    page.wait_for_url("**/board")
    assert_clean(tab, server)


def test_bot_standings_come_from_the_server(server, open_tab):
    status, body = http(server.url, "GET", "/standings")
    assert status == 200 and isinstance(body["games"], list)
    tab = open_tab("/bots", **PROJECTOR)
    expect(tab.page.locator("#live")).not_to_have_text("Connecting…")
    expect(tab.page.locator("section.game")).to_have_count(len(body["games"]))
    if not body["games"]:
        expect(tab.page.locator("#empty")).to_be_visible()
    assert_clean(tab, server)
