"""A whole class race in a real browser: six game pages, the projector board and the teacher.

This is the issue's "done when" as one story.  server.py runs as the other
browser tests start it, with its per-device limits on; every page is a
child's device of its own (its own browser context, so its own Player-Key
and screen size).  The teacher starts a race by the API, as the console's
Race button does; the children press their jump key at different moments,
so the race has a finish order.
"""

import sys
import time

import pytest

from conftest import ROOT, Proc, eventually, expect
from test_race_page import named_tab, race_now, start_race, wait_for_race
from test_race_pages import wait_for_board as wait_for_board_within

sys.path.insert(0, str(ROOT))
import server as dino  # noqa: E402  the server's own replay judges the results

CHILDREN = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay"]
PROJECTOR = {"viewport": {"width": 1920, "height": 1080}, "device_scale_factor": 1}
RACE_MS = 30_000


def wait_for_board(page, condition):
    return wait_for_board_within(page, condition, RACE_MS)


def jump_at(pages, race, schedule):
    """Press each page's jump key at its moment after the start (seconds on the server's clock)."""
    starts = race["starts_at"] / 1000 - (race["server_now"] / 1000 - race["fetched_at"])
    for at, page in sorted(schedule, key=lambda pair: pair[0]):
        time.sleep(max(0.0, starts + at - time.time()))
        page.focus("#stage")
        page.keyboard.down("Space")
        time.sleep(0.12)
        page.keyboard.up("Space")


@pytest.fixture
def server(tmp_path):
    """server.py as the other browser tests start it, but without per-device limits: here seven pages share
    one loopback address, where a class's phones have one each (a device may hold 4 live pages)."""
    dino_server = Proc(tmp_path, tmp_path / "data", "--client-limits", "off").wait_ready()
    yield dino_server
    dino_server.stop()


def test_a_class_races_on_one_course_live_on_the_board_and_watches_it_again(open_tab, server):
    tabs = [named_tab(open_tab, name, viewport={"width": 820 + 10 * i, "height": 620})
            for i, name in enumerate(CHILDREN)]
    pages = [tab.page for tab in tabs]
    board = open_tab("/board", **PROJECTOR).page

    race = start_race(server, countdown_s=5, time_limit_s=120)
    race["fetched_at"] = time.time()

    # The countdown: every page joins by itself, the board lists who is in.
    for page in pages:
        status = wait_for_race(page, "r.joined && r.state === 'countdown'")
        assert status["raceId"] == race["id"]
    counting = wait_for_board(board, f"r.raceId === {race['id']} && r.state === 'countdown' && r.ghosts.length === 6")
    assert sorted(g["name"] for g in counting["ghosts"]) == sorted(CHILDREN)
    expect(board.locator("#race-countdown")).to_be_visible()

    # The start: one seed for everyone, every page's first tick on the server's clock.
    for page in pages:
        status = wait_for_race(page, "r.state === 'racing' || r.state === 'crashed'")
        assert status["seed"] == race["seed"]
    jump_at(pages, race, [(3.8, pages[0]), (4.0, pages[1]), (4.2, pages[2]), (3.6, pages[3])])

    # Live: the ghosts move on the board, each exactly as far as its child's relayed inputs took it.
    first = wait_for_board(board, "r.state === 'running' && r.ghosts.some((g) => g.tick > 60)")
    later = wait_for_board(board, "r.ghosts.some((g) => g.tick > " + str(max(g["tick"] for g in first["ghosts"])) + ")")
    assert max(g["tick"] for g in later["ghosts"]) > max(g["tick"] for g in first["ghosts"])
    server_ticks = {r["name"]: r["tick"] for r in race_now(server, race["id"])["racers"]}
    assert all(g["tick"] <= server_ticks[g["name"]] + 30 for g in later["ghosts"])   # a batch may be in flight

    # The end: every child crashed; the board shows the podium, every page its own place.
    done = eventually(lambda: (lambda r: r if r["state"] == "done" else None)(race_now(server, race["id"])), 30,
                      "the race to end once every child crashed")
    assert done["end"] == "finished" and len(done["racers"]) == 6
    assert all(r["status"] == "crashed" and r["verified"] for r in done["racers"])
    wait_for_board(board, "r.state === 'done'")
    podium = board.locator("#podium li")
    expect(podium).to_have_count(3)
    for place, row in enumerate(done["racers"][:3], 1):
        expect(board.locator(f"#podium li.p{place}")).to_contain_text(row["name"])
    for page, name in zip(pages, CHILDREN):
        place = next(r["place"] for r in done["racers"] if r["name"] == name)
        assert wait_for_race(page, "r.state === 'done' && r.place !== null")["place"] == place

    # The results are the server's replays of the inputs, and each racer's run is on the board, verified.
    runs = server.call("GET", f"/races/{race['id']}/runs").json()
    config = dino.read_sim_config()
    for row in runs["racers"]:
        replay = dino.replay_run(config, runs["seed"], runs["width"], row["inputs"], 10 ** 6)
        assert (replay["score"], replay["crash_tick"]) == (row["score"], row["crashed_at"])
    results = {r["name"]: r for r in done["racers"]}
    assert {row["name"]: row["score"] for row in runs["racers"]} == {n: r["score"] for n, r in results.items()}
    board_rows = {row["name"]: row for row in server.call("GET", "/players").json()}
    assert all(board_rows[name]["verified"] and board_rows[name]["best"] == results[name]["score"] for name in CHILDREN)

    # Watch it again: every ghost at once, each ending where the race's results put it.
    again = open_tab(f"/board?race={race['id']}", **PROJECTOR).page
    wait_for_board(again, "r.state === 'replay' && r.ghosts.length === 6 && r.ghosts.some((g) => g.tick > 0)")
    final = wait_for_board(again, "r.state === 'done'")
    assert {g["name"]: g["distance"] for g in final["ghosts"]} == {n: r["distance"] for n, r in results.items()}
    assert all(not g["alive"] for g in final["ghosts"])
