"""Take the README's screenshots: .venv/bin/python tools/screenshots.py

Starts server.py on a free loopback port with a throwaway data directory,
seeds a few scores, and writes game-running.png, game-over.png, player.png
and phone.png in docs/, using the same Chromium and server process as the tests (conftest.py).
With --race it writes the class race instead: race-board.png (the board at
1920x1080 mid-race), race-podium.png and race-phone.png (a phone's result).
"""

import asyncio
import json
import threading

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from conftest import CHROMIUM, LAUNCH_ARGS, PHONE, Proc, call, post_score, start_game  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
import bench_live  # noqa: E402  bots that race as pages do
import server as dino  # noqa: E402

RACERS = ["Amara", "Ben", "Chloé", "Dev", "Elif", "Finn", "Grace", "Hamza", "Isla", "Jonas", "Kiri", "Leo",
          "Maya", "Noor", "Oscar", "Priya", "Quinn", "Rosa", "Sami", "Tomás", "Uma", "Vik", "Wren", "Yusuf"]
PROJECTOR = {"viewport": {"width": 1920, "height": 1080}, "device_scale_factor": 1}

# Scores of a first morning, low enough that the run in game-over.png makes the top 10.
SEED = [("Bea", 61), ("Rutu", 53), ("Ada", 45), ("Kim", 37), ("Rutu", 34), ("Bea", 29), ("Olly", 28),
        ("Rutu", 21), ("Sam", 12), ("Rutu", 9), ("Mo", 6)]
DESKTOP = {"viewport": {"width": 1000, "height": 640}, "device_scale_factor": 1}


def game_running(browser, url, path):
    """A few seconds into a run, before the first cactus ends it; retried if it already has."""
    for _ in range(3):
        context = browser.new_context(**DESKTOP)
        page = context.new_page()
        page.goto(url + "/")
        start_game(page)
        page.wait_for_timeout(3800)   # past the 3 s without obstacles, so a cactus is in sight
        if page.get_attribute("#stage", "data-state") == "running":
            page.screenshot(path=path)
            context.close()
            return
        context.close()
    raise RuntimeError("the T-Rex crashed before the screenshot every time")


def game_over(browser, url, path):
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    page.goto(url + "/")
    page.fill("#name", "Rutu")
    start_game(page)
    expect(page.locator("#stage")).to_have_attribute("data-state", "crashed", timeout=30_000)
    expect(page.locator("#save-status")).to_contain_text("saved")
    page.wait_for_timeout(800)   # the leaderboard picks up the new score
    page.screenshot(path=path, full_page=True)
    context.close()


def player(browser, url, path):
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    page.goto(url + "/user?name=Rutu")
    expect(page.locator("#chart .value")).to_have_count(5)
    page.wait_for_timeout(600)   # the bars grow in
    page.screenshot(path=path)
    context.close()


def phone(browser, url, path):
    context = browser.new_context(**{**PHONE, "device_scale_factor": 2})
    page = context.new_page()
    page.goto(url + "/")
    page.tap("#game")
    expect(page.locator("#stage")).to_have_attribute("data-state", "running")
    page.wait_for_timeout(2000)
    page.screenshot(path=path)
    context.close()


def race(browser, server):
    """24 bots and one phone race while the board draws them; three screenshots."""
    key = json.loads((server.data_dir / "teacher.json").read_text(encoding="utf-8"))["key"]
    phone = browser.new_context(**{**PHONE, "device_scale_factor": 2}).new_page()
    phone.goto(server.url + "/")
    phone.fill("#name", "Rutu")
    phone.press("#name", "Enter")
    expect(phone.locator("#stage")).to_have_attribute("data-ticket", "yes")
    board = browser.new_context(**PROJECTOR).new_page()
    board.goto(server.url + "/board")
    started = call(server.port, "POST", "/admin/races", {"title": "Friday race", "countdown_s": 6, "time_limit_s": 40},
                   {"Authorization": "Bearer " + key}).json()
    config = dino.read_sim_config()
    bots = [bench_live.BotRacer(server.port, i, started, config, lead=8 + (i * 7) % 9) for i in range(len(RACERS))]
    for i, (bot, name) in enumerate(zip(bots, RACERS)):
        bot.name = name
        bot.tires_at = 60 * (6 + (i * 5) % 19) if i % 4 else None   # most tire after 6 to 24 s; some run on
        call(server.port, "POST", f"/races/{started['id']}/join", {"name": name}, bot.key,
             source=bench_live.page_address(500 + bots.index(bot)))

    def run_bots():
        async def all_bots():
            stop = asyncio.Event()
            await asyncio.gather(*(bot.race_loop(0, stop) for bot in bots))
        asyncio.run(all_bots())
    thread = threading.Thread(target=run_bots, daemon=True)
    thread.start()
    board.wait_for_function("() => window.DinoBoardRace && window.DinoBoardRace.state === 'running'", timeout=20_000)
    board.wait_for_timeout(16_000)
    board.screenshot(path=str(DOCS / "race-board.png"))
    board.wait_for_function("() => window.DinoBoardRace && window.DinoBoardRace.state === 'done'", timeout=90_000)
    board.wait_for_timeout(1500)
    board.screenshot(path=str(DOCS / "race-podium.png"))
    phone.wait_for_function("() => window.DinoRace && window.DinoRace.state === 'done'", timeout=30_000)
    phone.wait_for_timeout(800)
    phone.screenshot(path=str(DOCS / "race-phone.png"))
    thread.join(5)


def main():
    if "--race" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            server = Proc(tmp, Path(tmp) / "data").wait_ready()
            try:
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
                    race(browser, server)
                    browser.close()
            finally:
                server.stop()
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        server = Proc(tmp, Path(tmp) / "data").wait_ready()
        try:
            for name, score in SEED:
                post_score(server, name, score)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
                # game-over.png adds Rutu's fifth score, which player.png then shows.
                for shoot, filename in [(game_running, "game-running.png"), (game_over, "game-over.png"),
                                        (player, "player.png"), (phone, "phone.png")]:
                    began = time.monotonic()
                    shoot(browser, server.url, str(DOCS / filename))
                    size = (DOCS / filename).stat().st_size
                    print(f"{filename}: {size // 1024} KiB in {time.monotonic() - began:.1f} s")
                browser.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
