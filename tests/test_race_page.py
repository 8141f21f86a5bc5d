"""The class race as a child sees it on the game page, in a real browser.

The teacher starts a race (POST /admin/races); every open game page hears of
it, counts down, and plays the race's one world at its start, sending its keys
to the server as it goes. These tests start server.py as the other browser
tests do and read what the page shows, window.DinoRace (the page's race state,
kept for tests) and what the server says of the race (GET /races/<id>).

A T-Rex that never jumps meets a cactus about 5 s into a run, so most races
here end by themselves soon after they start; a race with a classmate who
never sends a key is stopped by the teacher instead of waiting for them.
"""

import json
import math
import re
import secrets


from conftest import (HOSTILE_NAMES, PHONE, another_device, call, eventually, expect, scores_of,
                      start_game, wait_for_crash)

RACE_MS = 15_000        # a countdown of a few seconds, then a run that crashes within about 5 s


def teacher_key(server):
    return json.loads((server.data_dir / "teacher.json").read_text(encoding="utf-8"))["key"]


def admin(server, method, path, body=None):
    reply = server.call(method, path, body, headers={"Authorization": "Bearer " + teacher_key(server)})
    assert reply.status in (200, 201), reply
    return reply.json()


def start_race(server, countdown_s=3, time_limit_s=120):
    """The teacher taps Race: the race object, in its countdown."""
    race = admin(server, "POST", "/admin/races", {"title": "Test race", "countdown_s": countdown_s,
                                                  "time_limit_s": time_limit_s})
    assert race["state"] == "countdown" and race["width"] == 600, race
    return race


def race_now(server, race_id):
    reply = server.call("GET", f"/races/{race_id}")
    assert reply.status == 200, reply
    return reply.json()


def racer(server, race_id, name):
    """The racer called `name` in the race as the server has it, or None."""
    return next((r for r in race_now(server, race_id)["racers"] if r["name"] == name), None)


def classmate_joins(server, race_id, name):
    """A classmate's device joins the race by the API and then sends nothing (its Wi-Fi is gone)."""
    reply = call(server.port, "POST", f"/races/{race_id}/join", {"name": name},
                 headers={"Player-Key": secrets.token_urlsafe(32)}, source=another_device())
    assert reply.status == 200, reply


def dino_race(page):
    return page.evaluate("Object.assign({}, window.DinoRace)")


def wait_for_race(page, condition, timeout=RACE_MS):
    """Waits until window.DinoRace satisfies the JavaScript `condition` on `r`."""
    page.wait_for_function(f"() => {{ const r = window.DinoRace; return !!r && ({condition}); }}",
                           timeout=timeout)
    return dino_race(page)


def named_tab(open_tab, name, **context_options):
    """A game page whose child has typed `name` and pressed Enter, so the name is confirmed."""
    tab = open_tab("/", **context_options)
    page = tab.page
    page.fill("#name", name)
    page.press("#name", "Enter")
    expect(page.locator("#name")).to_have_attribute("aria-invalid", "false")
    expect(page.locator("#stage")).to_have_attribute("data-ticket", "yes")
    return tab


def named_page(open_tab, name, **context_options):
    return named_tab(open_tab, name, **context_options).page


def saved_name(name):
    """before_load for a page opened with `name` already in its field, as on a child's second visit."""
    return lambda page: page.add_init_script(f"localStorage.setItem('dino.name', {json.dumps(name)})")


# ================================================================ joining

def test_idle_page_counts_down_joins_and_races_the_races_world(open_tab, server):
    page = named_page(open_tab, "Ada")
    race = start_race(server)
    state = wait_for_race(page, "r.state === 'countdown' && r.joined")
    assert (state["raceId"], state["seed"]) == (race["id"], race["seed"])
    expect(page.locator("#race-count")).to_be_visible()
    expect(page.locator("#race-count")).to_have_text(re.compile(r"^[1-3]$"))
    assert racer(server, race["id"], "Ada")["status"] == "waiting"

    state = wait_for_race(page, "r.state === 'racing'")
    expect(page.locator("#race-hud")).to_contain_text("RACE")
    expect(page.locator("#stage")).to_have_attribute("data-race", "yes")
    expect(page.locator("#race-count")).to_be_hidden()
    # The page tells the server when its first tick was, on the server's clock.
    assert isinstance(state["firstTickAt"], (int, float))
    eventually(lambda: (racer(server, race["id"], "Ada") or {}).get("tick", 0) > 0, 5, "Ada's batches arrive")
    assert racer(server, race["id"], "Ada")["started_at"] == math.floor(state["firstTickAt"] + 0.5)  # Math.round


def test_a_race_run_is_kept_by_the_server_not_posted_by_the_page(open_tab, server):
    tab = named_tab(open_tab, "Ada")
    page = tab.page
    race = start_race(server)
    wait_for_race(page, "r.state === 'racing'")
    score = wait_for_crash(page)
    wait_for_race(page, "r.state === 'done'")   # the only racer crashed: the race is over

    ada = racer(server, race["id"], "Ada")
    assert (ada["score"], ada["place"], ada["status"]) == (score, 1, "crashed")
    expect(page.locator("#race-place")).to_have_text("Race over: you came 1st of 1.")
    expect(page.locator("#race-podium li")).to_have_text([f"Ada \u2014 {score}"])
    assert dino_race(page)["place"] == 1
    # The server keeps the run and scores it; the page posts nothing itself, keeps no HI, and
    # has nothing waiting for a name.
    assert not [url for url in tab.requests if "/score/" in url], tab.requests
    assert scores_of(server, "Ada") == [score]
    assert page.evaluate("localStorage.getItem('dino.hi')") is None
    assert page.evaluate("localStorage.getItem('dino.pending')") in (None, "[]")

    # The result stays on the game-over screen until the child starts a run of their own (a tap).
    page.click("#stage")
    expect(page.locator("#stage")).to_have_attribute("data-state", "running")
    expect(page.locator("#race-result")).to_be_hidden()
    expect(page.locator("#stage")).to_have_attribute("data-race", "no")
    assert dino_race(page)["state"] == "idle"


def test_page_opened_during_the_countdown_can_still_join(open_tab, server):
    race = start_race(server, countdown_s=10)
    page = open_tab("/", before_load=saved_name("Bea")).page
    state = wait_for_race(page, "r.joined")
    assert state["raceId"] == race["id"]
    assert racer(server, race["id"], "Bea") is not None
    expect(page.locator("#race-text")).to_contain_text("You are in the race as Bea")


def test_page_without_the_live_stream_still_hears_of_the_race_and_joins(open_tab, server):
    def no_stream(page):
        page.route("**/events*", lambda route: route.abort())
        saved_name("Kit")(page)

    page = open_tab("/", before_load=no_stream).page
    race = start_race(server, countdown_s=10)   # after the page's first look: only its polling can see it
    state = wait_for_race(page, "r.joined")
    assert state["raceId"] == race["id"]
    assert racer(server, race["id"], "Kit") is not None


def test_page_without_a_name_is_asked_for_one_and_can_watch(open_tab, server):
    page = open_tab("/").page
    race = start_race(server, countdown_s=10)
    wait_for_race(page, "r.state === 'countdown'")
    expect(page.locator("#race-text")).to_contain_text("Pick a name to race")
    expect(page.locator("#race-watch")).to_have_attribute("href", "/board")
    assert dino_race(page)["joined"] is False
    assert race_now(server, race["id"])["racers"] == []


def test_child_mid_run_is_asked_and_joins_by_the_button(open_tab, server):
    page = named_page(open_tab, "Cy")
    start_game(page)
    race = start_race(server, countdown_s=10)
    join = page.get_by_role("button", name="Join it (ends this run)")
    expect(page.locator("#race-text")).to_contain_text("A race starts in")
    join.click()
    wait_for_race(page, "r.joined")
    assert racer(server, race["id"], "Cy") is not None
    # The run left unfinished is not posted, and no run of the child's own starts during the countdown.
    expect(page.locator("#stage")).to_have_attribute("data-state", "waiting")
    page.focus("#stage")
    page.keyboard.press("Space")
    assert page.get_attribute("#stage", "data-state") == "waiting"
    assert scores_of(server, "Cy") in (None, [])


def test_child_who_finishes_the_run_during_the_countdown_joins_then(open_tab, server):
    page = named_page(open_tab, "Dee")
    start_game(page)
    race = start_race(server, countdown_s=30)
    expect(page.locator("#race-join")).to_be_visible()
    assert dino_race(page)["joined"] is False
    score = wait_for_crash(page)          # the T-Rex never jumps: the run ends well within 30 s
    wait_for_race(page, "r.joined")
    assert racer(server, race["id"], "Dee") is not None
    eventually(lambda: scores_of(server, "Dee"), 5, "the finished run is posted as usual")
    assert scores_of(server, "Dee")[0] == score
    admin(server, "POST", "/admin/races/current/stop")


def test_page_opened_while_a_race_runs_plays_on_and_joins_the_next_one(open_tab, server):
    race = start_race(server)
    classmate_joins(server, race["id"], "Eli")
    eventually(lambda: race_now(server, race["id"])["state"] == "running", 10, "the race starts")
    page = open_tab("/", before_load=saved_name("Fay")).page
    state = wait_for_race(page, "r.state === 'racing'")
    assert state["joined"] is False
    expect(page.locator("#race-text")).to_have_text("A race is on: watch it on the board; you join the next one.")
    start_game(page)                      # the child plays on, a run of their own
    expect(page.locator("#stage")).to_have_attribute("data-race", "no")
    admin(server, "POST", "/admin/races/current/stop")
    expect(page.locator("#race-bar")).to_be_hidden()


# ================================================================ racing

def test_names_on_the_podium_are_text_and_the_page_learns_its_place(open_tab, server):
    page = named_page(open_tab, "Gus")
    race = start_race(server)
    classmate_joins(server, race["id"], HOSTILE_NAMES[0])   # joined first, never moves: second
    wait_for_race(page, "r.state === 'racing'")
    wait_for_race(page, "r.place === 1")
    expect(page.locator("#race-hud")).to_have_text("RACE \u00b7 1st")
    score = wait_for_crash(page)
    wait_for_race(page, "r.state === 'crashed'")
    expect(page.locator("#race-place")).to_contain_text("The race goes on")
    admin(server, "POST", "/admin/races/current/stop")
    wait_for_race(page, "r.state === 'done'")
    expect(page.locator("#race-place")).to_have_text("Race over: you came 1st of 2.")
    expect(page.locator("#race-podium li")).to_have_text([f"Gus \u2014 {score}", f"{HOSTILE_NAMES[0]} \u2014 0"])
    assert page.locator("#race-podium img").count() == 0


def test_a_phone_races_the_600_px_world_drawn_smaller_and_taps_jump(open_tab, server):
    page = named_page(open_tab, "Hal", **PHONE)
    race = start_race(server)
    wait_for_race(page, "r.state === 'racing'")
    expect(page.locator("#stage")).to_have_class("scaled")
    canvas = page.locator("#game").bounding_box()
    assert canvas["width"] < 600 and round(canvas["width"] / canvas["height"]) == 4, canvas
    page.tap("#stage")                    # a jump
    score = wait_for_crash(page)
    wait_for_race(page, "r.state === 'done'")
    runs = server.call("GET", f"/races/{race['id']}/runs").json()
    hal = next(r for r in runs["racers"] if r["name"] == "Hal")
    assert hal["inputs"] and hal["inputs"][0][1] == 1, hal    # the tap reached the server as a jump
    assert hal["score"] == score


def test_inputs_sent_while_the_network_is_down_arrive_when_it_is_back(open_tab, server):
    page = named_page(open_tab, "Ivy")
    race = start_race(server)
    failed = []
    page.on("requestfailed", lambda request: failed.append(request.url) if "/inputs" in request.url else None)
    wait_for_race(page, "r.state === 'racing'")
    eventually(lambda: (racer(server, race["id"], "Ivy") or {}).get("tick", 0) > 0, 5, "Ivy's first batch")
    page.context.set_offline(True)        # the Wi-Fi drops
    page.keyboard.press("Space")          # a jump the server cannot hear yet
    for _ in range(100):                  # a few beats of the sender fail (waiting here lets events in)
        if len(failed) >= 2:
            break
        page.wait_for_timeout(100)
    assert len(failed) >= 2, failed
    assert page.get_attribute("#stage", "data-state") == "running"   # the run goes on meanwhile
    page.context.set_offline(False)
    score = wait_for_crash(page)
    wait_for_race(page, "r.state === 'done'")
    ivy = racer(server, race["id"], "Ivy")
    # The server replayed every key, the jump made offline too, and reached the page's own score.
    assert (ivy["score"], ivy["status"]) == (score, "crashed"), ivy
    runs = server.call("GET", f"/races/{race['id']}/runs").json()
    assert any(entry[1] == 1 for entry in next(r for r in runs["racers"] if r["name"] == "Ivy")["inputs"])


def test_a_refused_batch_stops_the_sending_and_says_why(open_tab, server):
    page = named_page(open_tab, "Jo")
    sent = []
    refusal = "this page is not in this race: it joins during the countdown"

    def refuse(route):
        sent.append(route.request.post_data)
        route.fulfill(status=409, content_type="application/json", body=json.dumps({"error": refusal}))

    page.route("**/races/*/inputs", refuse)
    start_race(server)
    wait_for_race(page, "r.state === 'racing'")
    expect(page.locator("#race-text")).to_have_text(f"The race stopped taking your run: {refusal}.")
    page.wait_for_timeout(600)            # two beats of the sender: nothing more is sent
    assert len(sent) == 1 and json.loads(sent[0])["seq"] == 0, sent
    assert "first_tick_at" in json.loads(sent[0])
