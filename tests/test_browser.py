"""What a player sees, checked in a real browser.

Each test starts server.py on a free loopback port with its own data
directory and drives Debian's Chromium through Playwright. Without a browser
the tests skip and say how to install one; with DINO_REQUIRE_BROWSER=1 (CI)
a missing browser is a failure instead.

The game runs on its real clock: tests wait for conditions with timeouts,
never for fixed long sleeps.
"""

import json
import re
import urllib.parse
import urllib.request

import pytest

from conftest import (CRASH_MS, HOSTILE_NAMES, LIVE_MS, PHONE, RETRY_MS, another_device, call, canvas_pixels,
                      eventually, expect, http, post_score, same_origin, scores_of, start_game, wait_for_crash)

pytestmark = pytest.mark.usefixtures("plain_posts_count")  # most tests seed the board with plain posts


def expect_on_leaderboard(page, name, score, timeout=LIVE_MS):
    row = page.locator("#leaderboard li").filter(has=page.locator("a", has_text=name))
    expect(row.locator(".score")).to_have_text(str(score), timeout=timeout)


# Every visible piece of text on the page (text nodes, input values, placeholders, ::before
# content) with the WCAG contrast ratio of its colour against the background it is painted on:
# the element's and its ancestors' background colours, composited over white.
CONTRAST_OF_EVERY_TEXT = """() => {
  const parse = css => {
    const m = css.match(/rgba?\\(([^)]+)\\)/);
    if (!m) throw new Error('unexpected colour ' + css);
    const [r, g, b, a] = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return [r, g, b, a === undefined ? 1 : a];
  };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
  const luminance = rgb => {
    const [r, g, b] = rgb.slice(0, 3).map(v => {
      const c = v / 255;
      return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const background = el => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) layers.push(parse(getComputedStyle(node).backgroundColor));
    return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255, 1]);
  };
  const ratio = (fg, bg) => {
    const [hi, lo] = [luminance(fg), luminance(bg)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const shown = el => {
    const box = el.getBoundingClientRect();
    return el.checkVisibility({ opacityProperty: true, visibilityProperty: true }) && box.width > 1 && box.height > 1;
  };
  const results = [];
  const check = (el, what, colour) => {
    const bg = background(el);
    const fg = over(parse(colour), bg);
    results.push({ what: what, ratio: Math.round(ratio(fg, bg) * 100) / 100, colour: colour,
                   background: 'rgb(' + bg.slice(0, 3).map(Math.round).join(', ') + ')' });
  };
  for (const el of document.body.querySelectorAll('*')) {
    if (!shown(el)) continue;
    const label = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : '');
    const ownText = [...el.childNodes].some(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (ownText) check(el, label + ' "' + el.textContent.trim().slice(0, 30) + '"', getComputedStyle(el).color);
    if (el.matches('input') && el.value) check(el, label + ' value', getComputedStyle(el).color);
    if (el.matches('input[placeholder]') && !el.value) {
      check(el, label + ' placeholder', getComputedStyle(el, '::placeholder').color);
    }
    const before = getComputedStyle(el, '::before');
    if (before.content && before.content !== 'none' && before.content !== 'normal') {
      check(el, label + '::before ' + before.content, before.color);
    }
  }
  return results;
}"""


def texts_below_aa_contrast(page):
    """(every text checked, those under the 4.5:1 that WCAG AA asks of body text)."""
    checked = page.evaluate(CONTRAST_OF_EVERY_TEXT)
    assert checked, "no visible text was found to check"
    return checked, [text for text in checked if text["ratio"] < 4.5]


def player_card(server, name):
    """GET /players/<name>: {name, rank, scores: [{score, verified, run, at}]}, or None if unknown."""
    status, body = http(server.url, "GET", "/players/" + urllib.parse.quote(name, safe=""))
    return body if status == 200 else None


def best_kept(server, name, timeout_s=5):
    """The player's best kept score, once there is one."""
    return eventually(lambda: (player_card(server, name) or {}).get("scores"), timeout_s,
                      f"{name} has a kept score")[0]


def ticket_is_ready(page):
    """The world on screen was made from a run ticket, so its run can be verified."""
    expect(page.locator("#stage")).to_have_attribute("data-ticket", "yes")


def play_one_game(open_tab, name, before_load=None):
    """A child types a name and plays until the T-Rex crashes; returns (page, score)."""
    page = open_tab("/", before_load=before_load).page
    page.fill("#name", name)
    ticket_is_ready(page)
    start_game(page)
    return page, wait_for_crash(page)


def post_plain_score(server, name, score):
    """A curl-style post with no run: stored, but not verified."""
    reply = call(server.port, "POST", "/score/" + urllib.parse.quote(name, safe=""), {"score": score},
                 timeout=5, source=another_device())
    assert reply.status == 200 and reply.json().get("verified", False) is False, reply


def leaderboard_row(page, name):
    return page.locator("#leaderboard li").filter(has=page.locator("a.name", has_text=name))


def seed_rutu_and_bea(server):
    """Rutu: six scores, so five are kept; Bea: the two best scores on the board."""
    for score in (533, 91, 341, 214, 12, 300):
        post_score(server, "Rutu", score)
    post_score(server, "Bea", 600)
    post_score(server, "Bea", 550)


# ================================================================ both pages

@pytest.mark.parametrize("path", ["/", "/user"])
def test_page_loads_with_no_console_error_and_no_request_to_another_origin(server, open_tab, path):
    post_score(server, "Rutu", 120)
    tab = open_tab(path)
    tab.page.wait_for_timeout(1000)   # let the leaderboard, the stream and the icon load
    assert tab.page_errors == []
    assert tab.console_errors == []
    assert tab.requests, "the page made no request at all"
    assert [url for url in tab.requests if not same_origin(server, url)] == []


@pytest.mark.parametrize("path", ["/", "/user"])
def test_page_is_served_with_a_strict_content_security_policy(server, path):
    with urllib.request.urlopen(server.url + path, timeout=5) as answer:
        policy = answer.headers["Content-Security-Policy"]
        assert answer.headers.get_content_type() == "text/html"
    assert policy, f"no Content-Security-Policy on {path}"
    assert "default-src 'none'" in policy
    assert "script-src 'self' 'sha256-" in policy
    assert "style-src 'sha256-" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy


def test_game_runs_without_a_content_security_policy_violation(server, open_tab):
    tab = open_tab("/")
    start_game(tab.page)
    tab.page.wait_for_timeout(500)
    assert tab.csp_violations() == []
    assert [text for text in tab.console_errors if "Content Security Policy" in text] == []


def test_player_page_runs_without_a_content_security_policy_violation(server, open_tab):
    seed_rutu_and_bea(server)
    tab = open_tab("/user?name=Rutu")
    expect(tab.page.locator("#chart .value")).to_have_count(5)
    tab.page.wait_for_timeout(500)
    assert tab.csp_violations() == []
    assert [text for text in tab.console_errors if "Content Security Policy" in text] == []


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_name_is_shown_as_text_on_the_game_leaderboard(server, open_tab, name):
    post_score(server, name, 77)
    tab = open_tab("/")
    link = tab.page.locator("#leaderboard li a")
    expect(link).to_have_count(1)
    assert link.text_content() == name
    assert tab.page.locator("#leaderboard img, #leaderboard script").count() == 0
    tab.page.wait_for_timeout(500)   # time for an injected onerror to fire, if there were one
    assert tab.dialogs == []
    assert [url for url in tab.requests if url.endswith("/x")] == []


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_name_is_shown_as_text_on_the_player_page(server, open_tab, name):
    post_score(server, name, 77)
    tab = open_tab("/user?name=" + urllib.parse.quote(name, safe=""))
    expect(tab.page.locator("#chart .value")).to_have_text(["77"])
    assert tab.page.locator("#player-name").text_content() == name
    assert tab.page.locator("#players .name").all_text_contents() == [name]
    assert tab.page.locator("main img, main script").count() == 0
    tab.page.wait_for_timeout(500)
    assert tab.dialogs == []
    assert [url for url in tab.requests if url.endswith("/x")] == []


def test_the_server_stops_with_exit_0_while_pages_listen_for_scores(server, open_tab):
    game, player = open_tab("/"), open_tab("/user")
    expect(player.page.locator("#live")).to_have_text("Live")
    expect(game.page.locator("#leaderboard")).to_be_attached()
    code, _ = server.stop()     # stop() waits 10 s, then kills: a page that held the server makes this -9
    assert code == 0


# ================================================================ the game

def test_space_starts_the_game_and_the_canvas_moves(server, open_tab):
    page = open_tab("/").page
    start_game(page)
    before = canvas_pixels(page)
    eventually(lambda: canvas_pixels(page) != before, 3, "the canvas changed after the game started")
    page.wait_for_function("() => Number(document.getElementById('stage').dataset.score) > 0")


def test_space_does_not_scroll_the_page(server, open_tab):
    page = open_tab("/").page
    page.evaluate("""() => {   // make sure there is somewhere to scroll to
        const spacer = document.body.appendChild(document.createElement('div'));
        spacer.style.height = '3000px';
    }""")
    page.focus("#stage")
    page.evaluate("window.scrollTo(0, 0)")
    page.keyboard.press("Space")
    page.keyboard.press("Space")
    page.wait_for_timeout(200)
    assert page.evaluate("window.scrollY") == 0


def test_a_trex_that_never_jumps_crashes_and_game_over_is_announced(server, open_tab):
    page = open_tab("/").page
    start_game(page)
    score = wait_for_crash(page)
    assert score > 0
    expect(page.locator("#announce")).to_contain_text("Game over")
    expect(page.locator("#announce")).to_contain_text(str(score))


def test_score_of_a_named_player_is_saved_at_game_over(server, open_tab):
    page = open_tab("/").page
    page.fill("#name", "Rex")
    start_game(page)
    score = wait_for_crash(page)
    assert eventually(lambda: scores_of(server, "Rex"), 5, "GET /score/Rex has a score") == [score]
    expect(page.locator("#save-status")).to_contain_text("saved")


def test_enter_restarts_after_game_over(server, open_tab):
    page = open_tab("/").page
    start_game(page)
    crashed_at = wait_for_crash(page)
    page.keyboard.press("Enter")
    expect(page.locator("#stage")).to_have_attribute("data-state", "running")
    assert int(page.get_attribute("#stage", "data-score")) < max(crashed_at, 1)


def test_score_made_while_the_server_is_down_is_kept_and_sent_when_it_is_back(server, open_tab):
    page = open_tab("/").page
    page.fill("#name", "Olly")
    start_game(page)
    server.stop()
    score = wait_for_crash(page)
    expect(page.locator("#save-status")).to_contain_text("will retry", timeout=5000)
    pending = json.loads(page.evaluate("localStorage.getItem('dino.pending')"))
    assert [(entry["name"], entry["score"]) for entry in pending] == [("Olly", score)]
    assert {"name", "score", "at", "run"} <= set(pending[0])       # run: its ticket, or null for a plain post

    server.start()
    assert eventually(lambda: scores_of(server, "Olly"), RETRY_MS / 1000, "the kept score reached the server") == [score]
    expect(page.locator("#save-status")).to_contain_text("saved")
    assert json.loads(page.evaluate("localStorage.getItem('dino.pending')") or "[]") == []


def test_kept_score_is_retried_on_its_own_while_the_live_stream_is_down(server, open_tab):
    # With /events unreachable only the 1-2-4-8 s backoff can deliver the score.
    tab = open_tab("/", before_load=lambda page: page.route("**/events", lambda route: route.abort()))
    page = tab.page
    page.fill("#name", "Olly")
    start_game(page)
    server.stop()
    score = wait_for_crash(page)
    expect(page.locator("#save-status")).to_contain_text("will retry", timeout=5000)
    server.start()
    assert eventually(lambda: scores_of(server, "Olly"), RETRY_MS / 1000, "the kept score reached the server") == [score]


def test_jump_key_restarts_only_after_a_short_wait(server, open_tab):
    page = open_tab("/").page
    start_game(page)
    wait_for_crash(page)
    page.keyboard.press("Space")          # still holding jump from the crash: no restart
    page.wait_for_timeout(300)
    assert page.get_attribute("#stage", "data-state") == "crashed"
    page.wait_for_timeout(1200)           # past the 1.2 s guard
    page.keyboard.press("Space")
    expect(page.locator("#stage")).to_have_attribute("data-state", "running")


def test_game_pauses_while_the_tab_is_hidden(server, open_tab):
    page = open_tab("/").page
    start_game(page)
    set_hidden = """hidden => {
        Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});
        Object.defineProperty(document, 'visibilityState', {value: hidden ? 'hidden' : 'visible', configurable: true});
        document.dispatchEvent(new Event('visibilitychange'));
    }"""
    page.evaluate(set_hidden, True)
    expect(page.locator("#stage")).to_have_attribute("data-state", "paused")
    score = page.get_attribute("#stage", "data-score")
    page.wait_for_timeout(500)
    assert page.get_attribute("#stage", "data-score") == score
    page.evaluate(set_hidden, False)
    expect(page.locator("#stage")).to_have_attribute("data-state", "running")


def test_name_is_remembered_after_a_reload(server, open_tab):
    page = open_tab("/").page
    page.fill("#name", "Rutu")
    page.reload()
    expect(page.locator("#name")).to_have_value("Rutu")


def test_name_the_server_would_refuse_gets_an_inline_message(server, open_tab):
    page = open_tab("/").page
    page.fill("#name", "x" * 33)
    # The server's own sentence, once typing pauses: the page has no name rules of its own.
    expect(page.locator("#name-error")).to_have_text("the name is 33 characters long: use at most 32")
    expect(page.locator("#name")).to_have_attribute("aria-invalid", "true")
    page.fill("#name", "Rutu")
    expect(page.locator("#name-error")).to_have_text("")
    expect(page.locator("#name")).to_have_attribute("aria-invalid", "false")


def test_name_field_says_nothing_when_the_server_cannot_check_names(server, open_tab):
    def not_found(route):   # as a server from before /names/check answers
        route.fulfill(status=404, content_type="application/json", body='{"error": "no such page"}')

    page = open_tab("/", before_load=lambda page: page.route("**/names/check?*", not_found)).page
    with page.expect_response("**/names/check?*") as answer:
        page.fill("#name", "x" * 33)
    assert answer.value.status == 404
    page.wait_for_timeout(300)   # time for the answer to be shown, if the page showed one
    expect(page.locator("#name-error")).to_have_text("")
    expect(page.locator("#name")).to_have_attribute("aria-invalid", "false")


def test_score_under_a_refused_name_says_it_was_not_saved(server, open_tab):
    page = open_tab("/").page
    page.fill("#name", "x" * 33)
    start_game(page)
    wait_for_crash(page)
    expect(page.locator("#save-status")).to_contain_text("not saved: the name is 33 characters long")
    expect(page.locator("#name")).to_have_value("x" * 33)   # kept, for the child to fix
    assert http(server.url, "GET", "/scores")[1] == []


def test_every_text_on_the_game_page_has_aa_contrast(server, open_tab):
    seed_rutu_and_bea(server)
    tab = open_tab("/")
    page = tab.page
    page.fill("#name", "Rutu")
    expect(page.locator("#leaderboard li.mine")).to_have_count(1)   # own row: white on ink
    checked, low = texts_below_aa_contrast(page)
    assert low == [], f"under 4.5:1 out of {len(checked)} texts checked"

    page.fill("#name", "x" * 33)                                     # a refusal, in red
    expect(page.locator("#name-error")).not_to_have_text("")
    checked, low = texts_below_aa_contrast(page)
    assert low == [], f"under 4.5:1 out of {len(checked)} texts checked"


def test_mute_is_remembered_after_a_reload(server, open_tab):
    page = open_tab("/").page
    before = page.get_attribute("#mute", "aria-pressed")
    page.click("#mute")
    after = page.get_attribute("#mute", "aria-pressed")
    assert {before, after} == {"true", "false"}
    page.reload()
    expect(page.locator("#mute")).to_have_attribute("aria-pressed", after)


def test_leaderboard_shows_the_top_ten_best_first(server, open_tab):
    for score in range(100, 1300, 100):
        post_score(server, f"p{score}", score)
    page = open_tab("/").page
    expect(page.locator("#leaderboard .score")).to_have_text([str(s) for s in range(1200, 200, -100)])


def test_own_row_is_highlighted_on_the_leaderboard(server, open_tab):
    seed_rutu_and_bea(server)
    page = open_tab("/").page
    page.fill("#name", "Rutu")
    page.reload()
    expect(page.locator("#leaderboard li.mine a.name")).to_have_text(["Rutu"])
    expect(page.locator("#leaderboard li:not(.mine) a.name")).to_have_text(["Bea"])


def test_leaderboard_has_one_row_per_child_and_tied_bests_share_a_rank(server, open_tab):
    seed_rutu_and_bea(server)
    post_score(server, "Cy", 533)                                  # ties Rutu's best
    page = open_tab("/").page
    expect(page.locator("#leaderboard a.name")).to_have_text(["Bea", re.compile("Cy|Rutu"), re.compile("Cy|Rutu")])
    expect(page.locator("#leaderboard .rank")).to_have_text(["1.", "2.", "2."])
    expect(page.locator("#leaderboard .score")).to_have_text(["600", "533", "533"])


def test_new_score_appears_on_every_open_leaderboard_without_reload(server, open_tab):
    post_score(server, "Bea", 100)
    tabs = [open_tab("/"), open_tab("/")]
    for tab in tabs:
        expect_on_leaderboard(tab.page, "Bea", 100)
        tab.page.evaluate("window.__notReloaded = true")
    post_score(server, "Ada", 321)
    for tab in tabs:
        expect_on_leaderboard(tab.page, "Ada", 321)
        assert tab.page.evaluate("window.__notReloaded === true")


def test_leaderboard_keeps_updating_when_the_event_stream_fails(server, open_tab):
    tab = open_tab("/", before_load=lambda page: page.route("**/events", lambda route: route.abort()))
    expect(tab.page.locator("#leaderboard")).to_be_attached()
    tab.page.wait_for_timeout(500)
    post_score(server, "Ada", 321)
    expect_on_leaderboard(tab.page, "Ada", 321, timeout=10_000)


def test_leaderboard_names_link_to_the_player_page(server, open_tab):
    seed_rutu_and_bea(server)
    page = open_tab("/").page
    page.locator("#leaderboard a", has_text="Bea").first.click()
    page.wait_for_url(server.url + "/user?name=Bea")
    expect(page.locator("#player-name")).to_have_text("Bea")


def test_simulation_covers_the_same_distance_at_60_and_144_hz(server, open_tab):
    page = open_tab("/").page
    at_60, at_144 = page.evaluate("""() => {
        function run(dt) {
          let state = DinoSim.create(1, {obstacles: false});
          const steps = Math.round(60000 / dt);
          for (let i = 0; i < steps; i++) {
            const next = DinoSim.step(state, {jump: false, duck: false}, dt);
            if (next && typeof next === 'object') state = next;
          }
          if (state.crashed) throw new Error('crashed with obstacles off');
          return state.distance;
        }
        return [run(1000 / 60), run(1000 / 144)];
    }""")
    assert at_60 > 6 * 3600 * 0.99   # at least the starting speed for a minute of frames
    assert abs(at_60 - at_144) <= 0.01 * at_60


# ================================================================ verified runs and replays

def test_a_game_played_on_the_page_is_saved_verified_with_no_extra_step(server, open_tab):
    page, score = play_one_game(open_tab, "Rex")
    best = best_kept(server, "Rex")
    assert (best["score"], best["verified"]) == (score, True)
    assert isinstance(best["run"], str) and best["run"]
    expect(page.locator("#save-status")).to_have_text(f"Score {score} saved as Rex \u2713 verified.")


def test_a_game_played_without_a_ticket_is_saved_unverified(server, open_tab):
    no_tickets = lambda page: page.route("**/runs", lambda route: route.abort())   # as if POST /runs never answers
    page = open_tab("/", before_load=no_tickets).page
    page.fill("#name", "Nia")
    start_game(page)
    expect(page.locator("#stage")).to_have_attribute("data-ticket", "no")
    score = wait_for_crash(page)
    best = best_kept(server, "Nia")
    assert (best["score"], best["verified"], best["run"]) == (score, False, None)
    expect(page.locator("#save-status")).to_have_text(f"Score {score} saved as Nia, unverified.")


def test_a_run_the_server_refuses_is_not_announced_as_saved(server, open_tab):
    def claim_more(route):   # the run as played, with a score it does not reach
        if route.request.method != "POST":
            return route.continue_()
        body = json.loads(route.request.post_data)
        body["score"] += 50
        route.continue_(post_data=json.dumps(body))

    page, score = play_one_game(open_tab, "Rex", before_load=lambda page: page.route("**/score/*", claim_more))
    status = page.locator("#save-status")
    expect(status).to_contain_text(f"Score {score} not saved: ")
    assert "saved as" not in status.text_content()
    assert len(status.text_content()) > len(f"Score {score} not saved: ."), "the server's sentence is shown"
    expect(page.locator("#name")).to_have_value("Rex")
    assert player_card(server, "Rex") is None


def test_leaderboard_marks_a_verified_run_and_not_a_plain_post(server, open_tab):
    post_plain_score(server, "Curl", 3)
    page, _ = play_one_game(open_tab, "Rex")
    run_id = best_kept(server, "Rex")["run"]
    rex, curl = leaderboard_row(page, "Rex"), leaderboard_row(page, "Curl")
    expect(rex.locator(".verified")).to_have_attribute("title", re.compile("^Verified: the server replayed"))
    expect(rex.locator("a.watch")).to_have_attribute("href", "/?watch=" + urllib.parse.quote(run_id, safe=""))
    expect(curl.locator(".score")).to_have_text("3")
    expect(curl.locator(".verified")).to_have_count(0)
    expect(curl.locator("a.watch")).to_have_count(0)
    expect(page.locator("#board-legend")).to_contain_text("verified: the server replayed the run")


def test_player_page_marks_verified_scores_and_links_to_their_replay(server, open_tab):
    post_plain_score(server, "Rex", 2)
    _, score = play_one_game(open_tab, "Rex")
    run_id = best_kept(server, "Rex")["run"]
    page = open_tab("/user?name=Rex").page
    expect(page.locator("#chart .value")).to_have_text([str(score), "2"])
    rows = page.locator("#chart li")
    expect(rows.nth(0).locator(".verified")).to_have_count(1)
    expect(rows.nth(0).locator("a.watch")).to_have_attribute("href", "/?watch=" + urllib.parse.quote(run_id, safe=""))
    expect(rows.nth(1).locator(".verified, a.watch")).to_have_count(0)
    expect(page.locator("#legend")).to_contain_text("verified: the server replayed the run")
    expect(page.locator("#players a", has_text="Rex").locator(".verified")).to_have_count(1)


def test_watching_a_run_replays_it_to_the_same_score_and_posts_nothing(server, open_tab):
    name = HOSTILE_NAMES[0]
    _, score = play_one_game(open_tab, name)
    run_id = best_kept(server, name)["run"]
    posts = []
    note_posts = lambda page: page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    tab = open_tab("/?watch=" + urllib.parse.quote(run_id, safe=""), before_load=note_posts)
    page = tab.page
    expect(page.locator("#watch-title")).to_have_text(f"Replay of {name}\u2019s run \u2014 {score}")
    expect(page.locator("#stage")).to_have_attribute("data-state", "replay")
    expect(page.get_by_role("link", name="Back to playing")).to_have_attribute("href", "/")
    page.click("#watch-speed")
    expect(page.locator("#watch-speed")).to_have_attribute("aria-pressed", "true")
    page.wait_for_selector('#stage[data-state="replayed"]', state="attached", timeout=CRASH_MS)
    assert int(page.get_attribute("#stage", "data-score")) == score
    page.wait_for_timeout(500)    # time for a late post, if the page made one
    assert posts == []
    assert page.locator("main img, main script").count() == 0
    assert tab.dialogs == [] and tab.page_errors == []


def test_watching_a_run_that_is_not_kept_says_so(server, open_tab):
    tab = open_tab("/?watch=no-such-run")
    expect(tab.page.locator("#watch-title")).to_contain_text("This replay cannot be shown: ")
    expect(tab.page.locator("#watch-speed")).to_be_hidden()
    assert tab.page_errors == []


def test_a_verified_run_played_while_the_server_is_down_is_verified_when_it_is_back(server, open_tab):
    page = open_tab("/").page
    page.fill("#name", "Olly")
    ticket_is_ready(page)
    start_game(page)
    server.stop()
    score = wait_for_crash(page)
    expect(page.locator("#save-status")).to_contain_text("will retry", timeout=5000)
    [kept] = json.loads(page.evaluate("localStorage.getItem('dino.pending')"))
    assert (kept["name"], kept["score"]) == ("Olly", score)
    assert isinstance(kept["run"], str) and isinstance(kept["width"], int) and isinstance(kept["inputs"], list)

    server.start()
    best = best_kept(server, "Olly", RETRY_MS / 1000)
    assert (best["score"], best["verified"]) == (score, True)
    expect(page.locator("#save-status")).to_contain_text(f"Score {score} saved as Olly \u2713 verified.")
    assert json.loads(page.evaluate("localStorage.getItem('dino.pending')") or "[]") == []


def test_a_score_kept_by_an_older_page_is_sent_as_a_plain_post(server, open_tab):
    older = json.dumps([{"name": "Olly", "score": 42, "at": 1}])   # the queue's shape before run tickets
    keep = lambda page: page.add_init_script(f"localStorage.setItem('dino.pending', {json.dumps(older)})")
    page = open_tab("/", before_load=keep).page
    best = best_kept(server, "Olly")
    assert (best["score"], best["verified"]) == (42, False)
    expect(page.locator("#save-status")).to_have_text("Score 42 saved as Olly, unverified.")


# ================================================================ a name's key, and no run lost

PLAYER_KEY = re.compile(r"[A-Za-z0-9_-]{43}")   # 32 random bytes, base64url without padding
CLAIMED = ("'Ben' is already someone's name on another device. Pick another, "
           "or ask your teacher to move it to this device")


def note_fetches(fetches):
    """before_load hook: record (path, Player-Key header) of every fetch() the page makes."""
    def note(page):
        page.on("request", lambda r: fetches.append((urllib.parse.urlsplit(r.url).path, r.headers.get("player-key")))
                if r.resource_type == "fetch" else None)
    return note


def kept_runs(server, name, count):
    """The player's kept scores once there are `count` of them, else None."""
    scores = (player_card(server, name) or {}).get("scores", [])
    return scores if len(scores) >= count else None


def pending_runs(page):
    return json.loads(page.evaluate("localStorage.getItem('dino.pending')") or "[]")


def test_every_request_of_the_game_page_carries_one_player_key_kept_across_reloads(server, open_tab):
    fetches = []
    page = open_tab("/", before_load=note_fetches(fetches)).page
    page.fill("#name", "Rex")
    ticket_is_ready(page)
    page.reload()
    ticket_is_ready(page)
    expect(page.locator("#leaderboard")).to_be_attached()
    key = page.evaluate("localStorage.getItem('dino-player-key')")
    assert PLAYER_KEY.fullmatch(key), key
    assert {"/runs", "/players", "/join", "/names/check"} <= {path for path, _ in fetches}
    assert {sent for _, sent in fetches} == {key}
    other = open_tab("/", **PHONE).page           # another browser: a key of its own
    assert PLAYER_KEY.fullmatch(other.evaluate("DinoClient.playerKey()")) and other.evaluate(
        "DinoClient.playerKey()") != key


def test_without_local_storage_the_tab_keeps_one_player_key(server, open_tab):
    refuse_storage = """Object.defineProperty(window, 'localStorage', {
        get: function () { throw new DOMException('storage is off', 'SecurityError'); }});"""
    fetches = []

    def before_load(page):
        page.add_init_script(refuse_storage)
        note_fetches(fetches)(page)
    page = open_tab("/", before_load=before_load).page
    page.fill("#name", "Rex")
    ticket_is_ready(page)
    expect(page.locator("#leaderboard")).to_be_attached()
    keys = {sent for _, sent in fetches}
    assert len(fetches) >= 3 and len(keys) == 1 and PLAYER_KEY.fullmatch(keys.pop()), fetches


def test_runs_played_before_a_name_is_typed_are_posted_verified_once_it_is_given(server, open_tab):
    page = open_tab("/").page
    ticket_is_ready(page)
    start_game(page)
    first = wait_for_crash(page)
    waiting = page.locator("#waiting-runs")
    expect(waiting).to_have_text("1 run waiting for your name")
    page.keyboard.press("Enter")
    ticket_is_ready(page)                          # the next world at once, on a ticket from the stock
    second = wait_for_crash(page)
    expect(waiting).to_have_text("2 runs waiting for your name")
    assert [(run["name"], run["score"]) for run in pending_runs(page)] == [("", first), ("", second)]
    assert http(server.url, "GET", "/scores")[1] == []

    page.fill("#name", "Nia")
    page.press("#name", "Enter")                   # done typing: back to the game
    card = eventually(lambda: kept_runs(server, "Nia", 2), 10, "both runs of Nia kept")
    assert sorted((s["score"], s["verified"]) for s in card) == sorted([(first, True), (second, True)])
    expect(waiting).to_have_text("")
    assert pending_runs(page) == []


def test_a_run_under_a_name_another_device_holds_waits_for_the_next_name(server, open_tab):
    bens_phone = {"Player-Key": "bens-own-phone-0123456789abcdef"}
    claimed = call(server.port, "POST", "/score/Ben", {"score": 3}, headers=bens_phone, source=another_device())
    assert claimed.status == 200                   # Ben's phone played first: the name is Ben's
    page = open_tab("/").page
    page.fill("#name", "Ben")
    expect(page.locator("#name-error")).to_have_text(CLAIMED)      # said while the name is typed
    ticket_is_ready(page)
    start_game(page)
    score = wait_for_crash(page)
    expect(page.locator("#save-status")).to_have_text(f"Score {score} not saved: {CLAIMED}.")
    expect(page.locator("#waiting-runs")).to_have_text("1 run waiting for your name")
    [kept] = pending_runs(page)
    assert (kept["name"], kept["score"], isinstance(kept["run"], str)) == ("", score, True)

    page.fill("#name", "Benji")
    page.press("#name", "Enter")
    best = best_kept(server, "Benji", 10)
    assert (best["score"], best["verified"]) == (score, True)
    expect(page.locator("#save-status")).to_contain_text(f"Score {score} saved as Benji \u2713 verified.")
    expect(page.locator("#waiting-runs")).to_have_text("")
    assert [entry["score"] for entry in player_card(server, "Ben")["scores"]] == [3]   # Ben's row untouched


def test_a_run_started_while_the_server_is_stopped_is_verified_on_a_stocked_ticket(server, open_tab):
    page = open_tab("/").page
    page.fill("#name", "Olly")
    ticket_is_ready(page)
    expect(page.locator("#stage")).to_have_attribute("data-stock", "3")
    server.stop()
    start_game(page)
    first = wait_for_crash(page)
    page.keyboard.press("Enter")                   # a new world while the server is away
    ticket_is_ready(page)
    expect(page.locator("#stage")).to_have_attribute("data-stock", "2")
    second = wait_for_crash(page)
    expect(page.locator("#save-status")).to_contain_text("will retry", timeout=5000)
    kept = pending_runs(page)
    assert [(run["name"], run["score"]) for run in kept] == [("Olly", first), ("Olly", second)]
    assert all(isinstance(run["run"], str) and isinstance(run["seed"], int) for run in kept)

    server.start()
    card = eventually(lambda: kept_runs(server, "Olly", 2), RETRY_MS / 1000, "both runs of Olly kept")
    assert sorted((s["score"], s["verified"]) for s in card) == sorted([(first, True), (second, True)])


# ================================================================ ties at 10th

def seed_tied_at_tenth(server, tied):
    """Nine children with bests 500 to 420, then `tied` more children all on 100."""
    for i in range(9):
        post_score(server, f"Kid {i}", 500 - 10 * i)
    for i in range(tied):
        post_score(server, f"Tie {i}", 100)


def test_everyone_tied_at_tenth_is_on_the_game_pages_top_ten(server, open_tab):
    seed_tied_at_tenth(server, 3)
    page = open_tab("/").page
    expect(page.locator("#leaderboard .rank")).to_have_text([f"{r}." for r in range(1, 10)] + ["10."] * 3)
    expect(page.locator("#leaderboard a.name").filter(has_text="Tie ")).to_have_count(3)


def test_many_tied_at_tenth_are_counted_on_the_game_page(server, open_tab):
    seed_tied_at_tenth(server, 8)
    page = open_tab("/").page
    expect(page.locator("#leaderboard .score")).to_have_count(10)
    expect(page.locator("#leaderboard li.tied-more")).to_have_text("+7 more tied with a best of 100")


def test_everyone_tied_at_tenth_is_on_the_board_and_it_still_fits_the_projector(server, open_tab):
    seed_tied_at_tenth(server, 3)
    page = open_tab("/board", viewport={"width": 1920, "height": 1080}, device_scale_factor=1).page
    expect(page.locator("#leaderboard .rank")).to_have_text([str(r) for r in range(1, 10)] + ["10"] * 3)
    box = page.evaluate("""() => ({scroll: document.documentElement.scrollHeight,
        last: document.querySelector('#leaderboard li:last-child').getBoundingClientRect().bottom,
        text: parseFloat(getComputedStyle(document.querySelector('#leaderboard .name')).fontSize)})""")
    assert box["scroll"] == 1080 and box["last"] <= 1080, box
    assert box["text"] >= 54, box                  # as readable from the back as ten rows


def test_many_tied_at_tenth_are_counted_on_the_board(server, open_tab):
    seed_tied_at_tenth(server, 6)
    page = open_tab("/board", viewport={"width": 1920, "height": 1080}, device_scale_factor=1).page
    expect(page.locator("#leaderboard .name")).to_have_count(10)
    expect(page.locator("#leaderboard li.more")).to_have_text("+5 more tied with 100")


# ================================================================ the game on a phone

def test_game_fits_a_phone_screen_without_sideways_scrolling(server, open_tab):
    page = open_tab("/", **PHONE).page
    box = page.evaluate("""() => {
        const r = document.getElementById('game').getBoundingClientRect();
        return {left: r.left, right: r.right, width: r.width, inner: innerWidth,
                scroll: document.documentElement.scrollWidth};
    }""")
    assert box["inner"] == 390
    assert box["left"] >= 0 and box["right"] <= box["inner"]
    assert box["width"] >= 0.8 * box["inner"], "the canvas should use the width of the screen"
    assert box["scroll"] <= box["inner"]


def test_tap_starts_the_game_on_a_phone(server, open_tab):
    page = open_tab("/", **PHONE).page
    page.tap("#game")
    expect(page.locator("#stage")).to_have_attribute("data-state", "running")


def test_canvas_is_drawn_at_the_screens_pixel_density(server, open_tab):
    page = open_tab("/", **PHONE).page
    css, backing, ratio = page.evaluate("""() => {
        const c = document.getElementById('game');
        const r = c.getBoundingClientRect();
        return [[r.width, r.height], [c.width, c.height], devicePixelRatio];
    }""")
    assert ratio == 3
    assert abs(backing[0] - css[0] * ratio) <= ratio
    assert abs(backing[1] - css[1] * ratio) <= ratio


# ================================================================ the player page

def test_player_list_shows_every_player_with_their_best_best_first(server, open_tab):
    seed_rutu_and_bea(server)
    page = open_tab("/user").page
    expect(page.locator("#players .name")).to_have_text(["Bea", "Rutu"])
    expect(page.locator("#players .num")).to_have_text(["600", "533"])


def test_typing_filters_the_player_list(server, open_tab):
    seed_rutu_and_bea(server)
    page = open_tab("/user").page
    expect(page.locator("#players .name")).to_have_count(2)
    page.fill("#filter", "ru")
    expect(page.locator("#players .name")).to_have_text(["Rutu"])


def test_picking_a_player_shows_their_top_five_best_first(server, open_tab):
    seed_rutu_and_bea(server)
    page = open_tab("/user").page
    page.locator("#players a", has_text="Rutu").click()
    expect(page.locator("#player-name")).to_have_text("Rutu")
    expect(page.locator("#chart .value")).to_have_text(["533", "341", "300", "214", "91"])
    # Bars grow in; once the best one fills its track, each is shorter than the one above.
    page.wait_for_function("""() => {
        const bars = [...document.querySelectorAll('#chart .bar')];
        const track = bars[0].parentElement.getBoundingClientRect().width;
        return Math.abs(bars[0].getBoundingClientRect().width - track) < 1;
    }""")
    widths = page.evaluate("[...document.querySelectorAll('#chart .bar')].map(b => b.getBoundingClientRect().width)")
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1] > 0


def test_picking_a_player_puts_their_name_in_the_address(server, open_tab):
    seed_rutu_and_bea(server)
    page = open_tab("/user").page
    page.fill("#filter", "Bea")
    page.keyboard.press("Enter")
    expect(page.locator("#player-name")).to_have_text("Bea")
    assert page.url == server.url + "/user?name=Bea"


def test_player_page_shows_the_players_best_rank(server, open_tab):
    seed_rutu_and_bea(server)
    page = open_tab("/user?name=Rutu").page
    expect(page.locator("#rank")).to_have_text("Best rank on the leaderboard: #2")   # behind Bea: the board counts children


def test_address_with_a_name_opens_straight_on_that_player(server, open_tab):
    seed_rutu_and_bea(server)
    page = open_tab("/user?name=rutu").page
    expect(page.locator("#player-name")).to_have_text("Rutu")   # the spelling first seen
    expect(page.locator("#chart .value")).to_have_count(5)
    expect(page.locator("#players a[aria-current=true] .name")).to_have_text("Rutu")


@pytest.mark.parametrize("name", ["Nobody", "a name far too long to be a player's name"])
def test_unknown_player_gets_a_friendly_message(server, open_tab, name):
    seed_rutu_and_bea(server)
    tab = open_tab("/user?name=" + urllib.parse.quote(name))
    expect(tab.page.locator("#message")).to_contain_text(f"No scores for \u201c{name}\u201d yet")
    expect(tab.page.locator("#chart li")).to_have_count(0)
    assert tab.page_errors == []


def test_player_page_links_back_to_the_game(server, open_tab):
    page = open_tab("/user").page
    page.get_by_role("link", name="Back to the game").click()
    page.wait_for_url(server.url + "/")
    expect(page.locator("#stage")).to_be_visible()


def test_player_page_updates_live_when_a_score_lands(server, open_tab):
    seed_rutu_and_bea(server)
    page = open_tab("/user?name=Rutu").page
    expect(page.locator("#chart .value")).to_have_count(5)
    post_score(server, "Rutu", 999)
    expect(page.locator("#chart .value")).to_have_text(["999", "533", "341", "300", "214"], timeout=LIVE_MS)
    expect(page.locator("#players .num").first).to_have_text("999", timeout=LIVE_MS)
    expect(page.locator("#rank")).to_have_text("Best rank on the leaderboard: #1")


def test_player_page_keeps_updating_when_the_event_stream_fails(server, open_tab):
    seed_rutu_and_bea(server)
    tab = open_tab("/user?name=Rutu",
                   before_load=lambda page: page.route("**/events", lambda route: route.abort()))
    expect(tab.page.locator("#chart .value")).to_have_count(5)
    post_score(server, "Rutu", 999)
    expect(tab.page.locator("#chart .value").first).to_have_text("999", timeout=5000)


def test_player_page_goes_live_again_after_the_server_turned_its_stream_away(server, open_tab):
    turned_away = []

    def events(route):
        if turned_away:
            route.continue_()
        else:   # as a server with too many open pages answers; the browser then gives up on the stream
            turned_away.append(route.request.url)
            route.fulfill(status=503, content_type="application/json", body='{"error": "too many live pages"}')

    page = open_tab("/user", before_load=lambda page: page.route("**/events", events)).page
    expect(page.locator("#live")).to_have_text("Reconnecting\u2026 updating every 2 s")
    expect(page.locator("#live")).to_have_text("Live", timeout=6000)   # reopened after 3 s
    assert len(turned_away) == 1


def test_every_text_on_the_player_page_has_aa_contrast(server, open_tab):
    seed_rutu_and_bea(server)
    page = open_tab("/user?name=Rutu").page
    expect(page.locator("#chart .value")).to_have_count(5)
    expect(page.locator("#players a[aria-current=true]")).to_have_count(1)   # the picked row: white on ink
    expect(page.locator("#live")).to_have_text("Live")
    checked, low = texts_below_aa_contrast(page)
    assert low == [], f"under 4.5:1 out of {len(checked)} texts checked"


def test_player_page_fits_a_phone_screen_without_sideways_scrolling(server, open_tab):
    seed_rutu_and_bea(server)
    post_score(server, "A player with a name of 32 chars", 5)
    page = open_tab("/user?name=Rutu", **PHONE).page
    expect(page.locator("#chart .value")).to_have_count(5)
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
