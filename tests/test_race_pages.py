"""The class race on the projector board and in the teacher's console, in a real browser.

The board draws every racer as a ghost T-Rex that its own DinoSim runs from
the inputs the server relays, so a ghost must stand exactly where its racer's
world is: the same tick and the same distance, never further. The server runs
in this process with its clock in the test's hand (as in test_race.py); racers
are bots that play the server's own simulation and send their keys as a page
does. The board exposes window.DinoBoardRace for these tests.
"""

import math

import pytest

from conftest import CSP_PROBE, HOSTILE_NAMES, PHONE, Tab, eventually, expect
from test_race import Racer, crash_all, race_now, race_server, run_clock_to, start_race  # noqa: F401 (a fixture)

PROJECTOR = {"viewport": {"width": 1920, "height": 1080}, "device_scale_factor": 1}
GHOSTS_MS = 10_000      # relayed inputs reach the board's ghosts well within this


@pytest.fixture
def open_page(browser, race_server):
    """open_page(path, **context options) -> Tab on the in-process server, projector-sized unless told."""
    contexts = []

    def open_page(path, **options):
        context = browser.new_context(**(options or PROJECTOR))
        context.set_default_timeout(GHOSTS_MS)
        context.add_init_script(CSP_PROBE)
        contexts.append(context)
        tab = Tab(context.new_page()).watch()
        tab.page.goto(f"http://127.0.0.1:{race_server.port}{path}", wait_until="load")
        return tab

    yield open_page
    for context in contexts:
        context.close()


def board_race(page):
    return page.evaluate("window.DinoBoardRace")


def wait_for_board(page, condition, timeout=None):
    """Waits until window.DinoBoardRace satisfies the JavaScript `condition` on `r` (the context's timeout,
    unless told)."""
    page.wait_for_function(f"() => {{ const r = window.DinoBoardRace; return !!r && ({condition}); }}",
                           timeout=timeout)
    return board_race(page)


def where(racer):
    """Where a racer's ghost must stand: its world's tick and its distance, rounded down as the server does."""
    return {"tick": racer.world.ticks, "distance": math.floor(racer.world.distance), "alive": not racer.world.crashed}


def ghosts_reach(page, racers):
    """Waits until every racer's ghost stands where the racer's world is; returns the ghosts by name."""
    want = {racer.name: where(racer) for racer in racers}
    assert want
    page.wait_for_function("""(want) => {
      const r = window.DinoBoardRace;
      return !!r && Object.keys(want).every((name) => {
        const g = r.ghosts.find((ghost) => ghost.name === name);
        return g && g.tick === want[name].tick && g.distance === want[name].distance && g.alive === want[name].alive;
      });
    }""", arg=want, timeout=GHOSTS_MS)
    return {ghost["name"]: ghost for ghost in board_race(page)["ghosts"]}


def play(server, race, racers, seconds):
    """Every racer still running plays up to `seconds` after the start and sends its batch, as a page does."""
    run_clock_to(server, race, seconds)
    for racer in racers:
        if not racer.world.crashed:
            racer.play(int(seconds * 60) - racer.world.ticks)
            assert racer.send().status == 200


def joined(server, race, *names_and_reach):
    racers = [Racer(server, name, reach) for name, reach in names_and_reach]
    assert racers
    for racer in racers:
        assert racer.join(race).status == 200
    return racers


def assert_clean(tab):
    assert tab.page_errors == []
    assert tab.console_errors == []
    assert tab.page.evaluate("window.__cspViolations") == []


# ================================================================ the board

def test_the_board_counts_down_with_the_racers_who_joined_as_text(race_server, open_page):
    tab = open_page("/board")
    page = tab.page
    race = start_race(race_server, title="Friday race", countdown_s=30)
    joined(race_server, race, ("Ada", 12), (HOSTILE_NAMES[0], 12))
    state = wait_for_board(page, "r.state === 'countdown' && r.ghosts.length === 2")
    assert state["raceId"] == race["id"]
    expect(page.locator("#board")).to_be_hidden()
    expect(page.locator("#race-title")).to_have_text("Friday race")
    assert 25 <= int(page.locator("#countdown-number").text_content()) <= 30
    expect(page.locator("#countdown-names li")).to_have_text(["Ada", HOSTILE_NAMES[0]])
    assert page.locator("#race img").count() == 0
    size = page.locator("#countdown-number").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert size >= 0.3 * 1080                                    # read from the back of the room
    assert_clean(tab)


def test_each_ghost_stands_exactly_where_its_racers_relayed_inputs_put_it(race_server, open_page):
    page = open_page("/board").page
    race = start_race(race_server, countdown_s=3)
    racers = joined(race_server, race, ("Ada", 14), ("Bo", 10), ("Cy", 0))
    wait_for_board(page, "r.state === 'countdown' && r.ghosts.length === 3")
    for second in (0.25, 0.5, 0.75, 1.0, 2.0, 3.0):
        play(race_server, race, racers, second)
    ghosts = ghosts_reach(page, racers)
    assert ghosts["Ada"]["tick"] == 180 and ghosts["Ada"]["distance"] > 1000
    assert board_race(page)["state"] == "running"

    # Cy never jumps: it crashes at the first cactus and its ghost stops there, at the server's distance.
    crash_all(race_server, race, [racers[2]])
    ghosts = ghosts_reach(page, racers)
    server_cy = next(r for r in race_now(race_server)["racers"] if r["name"] == "Cy")
    assert not ghosts["Cy"]["alive"] and ghosts["Cy"]["distance"] == server_cy["distance"]
    expect(page.locator("#race-standings li", has_text="Cy")).to_contain_text("\u2715")


def test_a_ghost_never_runs_past_the_last_relayed_tick(race_server, open_page):
    page = open_page("/board").page
    race = start_race(race_server, countdown_s=3)
    racers = joined(race_server, race, ("Ada", 14))
    wait_for_board(page, "r.state === 'countdown'")
    play(race_server, race, racers, 1.0)
    ghosts_reach(page, racers)
    page.wait_for_timeout(1000)                                  # the child's page says nothing more
    assert board_race(page)["ghosts"][0]["tick"] == 60


def test_a_board_opened_mid_race_catches_up_from_the_runs_so_far(race_server, open_page):
    race = start_race(race_server, countdown_s=3)
    racers = joined(race_server, race, ("Ada", 14), ("Bo", 9))
    for step in range(1, 13):
        play(race_server, race, racers, step * 0.25)
    tab = open_page("/board")
    page = tab.page
    ghosts_reach(page, racers)
    play(race_server, race, racers, 4.0)                          # and then it follows the relayed batches
    ghosts_reach(page, racers)
    expect(page.locator("#race-running")).to_be_visible()
    expect(page.locator("#race-standings li")).to_have_count(2)
    assert_clean(tab)


def test_a_silent_racer_shows_reconnecting(race_server, open_page):
    page = open_page("/board").page
    race = start_race(race_server, countdown_s=3)
    ada, bo = joined(race_server, race, ("Ada", 14), ("Bo", 14))
    play(race_server, race, [ada, bo], 1.0)
    play(race_server, race, [ada], 3.5)                           # Bo's Wi-Fi is gone
    state = wait_for_board(page, "r.ghosts.some((g) => g.name === 'Bo' && g.status === 'reconnecting')")
    assert [g["status"] for g in state["ghosts"] if g["name"] == "Ada"] == ["racing"]
    expect(page.locator("#race-standings li", has_text="Bo")).to_contain_text("reconnecting")


def test_the_podium_shows_the_first_three_and_everyone_stands_in_the_final_table(race_server, open_page):
    tab = open_page("/board")
    page = tab.page
    race = start_race(race_server, countdown_s=3)
    racers = joined(race_server, race, ("Ada", 14), ("Bo", 10), ("Cy", 7), ("Dee", 0))
    wait_for_board(page, "r.state === 'countdown' && r.ghosts.length === 4")
    crash_all(race_server, race, racers)
    wait_for_board(page, "r.state === 'done'")
    final = race_now(race_server, race["id"])
    assert final["state"] == "done"
    podium = [r["name"] for r in final["racers"][:3]]
    expect(page.locator("#podium li .who")).to_have_text(podium)
    expect(page.locator("#race-final li")).to_have_count(4)
    expect(page.locator("#race-final li").first).to_contain_text(final["racers"][0]["name"])
    expect(page.locator("#race-again")).to_have_attribute("href", f"/board?race={race['id']}")
    assert_clean(tab)


def test_watch_again_plays_the_whole_race_then_its_podium(race_server, open_page):
    race = start_race(race_server, countdown_s=3)
    racers = joined(race_server, race, ("Ada", 0), ("Bo", 0))    # both run into the first cactus: a short race
    crash_all(race_server, race, racers)
    # The race thread ends the race a moment after the last crash.
    eventually(lambda: race_now(race_server, race["id"])["state"] == "done", 10, "the race to end")
    tab = open_page(f"/board?race={race['id']}")
    page = tab.page
    first = wait_for_board(page, "r.state === 'replay' || r.state === 'done'")
    assert first["state"] == "replay", "the replay starts from the start"
    assert max(ghost["tick"] for ghost in first["ghosts"]) < racers[0].world.ticks
    wait_for_board(page, "r.state === 'done'")
    ghosts = ghosts_reach(page, racers)
    assert all(not ghost["alive"] for ghost in ghosts.values())
    expect(page.locator("#podium li")).to_have_count(2)
    assert_clean(tab)


# ================================================================ the teacher's console

def test_the_teacher_starts_and_stops_a_race_from_a_phone(race_server, open_page):
    tab = open_page("/teacher#key=" + race_server.app.teacher.key, **PHONE)
    page = tab.page
    expect(page.locator("#no-races")).to_be_visible()
    page.fill("#race-title", "Quiz race")
    page.fill("#race-countdown", "10")
    page.fill("#race-limit", "2")
    page.get_by_role("button", name="Race", exact=True).click()
    expect(page.get_by_role("button", name="Stop race")).to_be_visible()
    race = race_now(race_server)
    assert (race["title"], race["countdown_s"], race["time_limit_s"], race["state"]) == ("Quiz race", 10, 120,
                                                                                        "countdown")
    expect(page.locator("#race-now")).to_contain_text("Quiz race")
    assert page.evaluate("document.documentElement.scrollWidth") == 390

    page.get_by_role("button", name="Stop race").click()
    page.locator("#confirm").get_by_role("button", name="Stop race").click()
    expect(page.get_by_role("button", name="Stop race")).to_be_hidden()
    stopped = race_now(race_server, race["id"])
    assert (stopped["state"], stopped["end"]) == ("done", "stopped")
    row = page.locator("#races li").first
    expect(row).to_contain_text("Quiz race")
    links = [row.get_by_role("link").nth(i).get_attribute("href") for i in range(3)]
    assert links == [f"/board?race={race['id']}", f"/races/{race['id']}", f"/races/{race['id']}.csv"]
    assert race_server.call("GET", links[2]).status == 200
    assert_clean(tab)
