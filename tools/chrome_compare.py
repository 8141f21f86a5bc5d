"""Measure our game beside the real one: chrome://dino in the system's Chromium.

    .venv/bin/python tools/chrome_compare.py [--seeds 48]

Chromium shows its own Dino game on the error page it serves when offline, so this
needs no network. The script drives that game from outside, one frame at a time on
a stubbed clock, through the objects the page exposes (the runner, its T-Rex and its
obstacles); it copies none of it. Our side runs in the Python port of server.py,
which test_sim.py holds tick for tick to the page's own DinoSim.

It prints, for both games:
- the T-Rex's height after each frame of a jump at speeds 6, 9.5 and 13;
- the jump window over cactus groups: the obstacle x at take-off for which a jump
  clears it, at exact 1000/60 ms frames and at 16.6 ms frames;
- obstacles a minute at top speed;
- how long a simple jumping bot lasts, over --seeds runs of up to 10 minutes.
"""

import argparse
import math
import pathlib
import statistics
import sys

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import server  # noqa: E402  the Python port of the page's simulation

FRAME_MS = 1000 / 60
TEN_MINUTES = 36000
CASES = [("small", 3, 6), ("large", 2, 8), ("small", 1, 13), ("large", 1, 13), ("large", 3, 13)]
CHROME_TYPES = {"small": "cactusSmall", "large": "cactusLarge", "ptero": "pterodactyl"}

# A seeded Math.random and a stubbed clock, so each Chrome run is repeatable and frames are exact.
CHROME_SETUP = """(seed) => {
  let state = seed >>> 0;
  Math.random = function () {
    state = (state + 0x6D2B79F5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  window.clockMs = 1000;
  performance.now = () => window.clockMs;
  window.requestAnimationFrame = () => 0;
}"""

CHROME_ARC = """(speed) => {
  const t = Runner.getInstance().tRex;
  t.reset();
  t.startJump(speed);
  const rises = [];
  for (let frame = 1; t.jumping && frame < 200; frame++) {
    t.updateJump(1000 / 60);
    if (frame === 10) t.endJump();
    rises.push(t.groundYPos - t.yPos);
  }
  return rises;
}"""

CHROME_WINDOW = """(c) => {
  const r = Runner.getInstance();
  let group = null;
  for (let i = 0; i < 5000 && !group; i++) {
    r.horizon.obstacles = [];
    r.horizon.obstacleHistory = [];
    r.horizon.addNewObstacle(c.speed);
    const o = r.horizon.obstacles[0];
    if (o.typeConfig.type === c.type && o.size === c.size) group = o;
  }
  const clear = [];
  for (let x = 60; x <= 600; x++) {
    r.tRex.xPos = r.tRex.xInitialPos = 50;
    r.tRex.reset();
    group.xPos = x;
    group.remove = false;
    r.tRex.startJump(c.speed);
    let hit = false;
    for (let frame = 1; !hit && group.xPos + group.width > 0; frame++) {
      if (frame === 10) r.tRex.endJump();
      if (r.tRex.jumping) r.tRex.updateJump(c.frameMs);
      group.update(c.frameMs, c.speed);
      hit = !!r.checkForCollision(group, r.tRex);
    }
    if (!hit) clear.push(x);
  }
  return clear;
}"""

# Starts a run, then plays it with the bot: jump when the next obstacle (unless it flies high)
# is nearer than speed x reach, holding the key 10 frames. Returns frames survived and spawns.
CHROME_RUN = """(args) => {
  const r = Runner.getInstance();
  const step = () => { window.clockMs += 1000 / 60; r.update(); };
  document.dispatchEvent(new KeyboardEvent('keydown', {keyCode: 32}));
  document.dispatchEvent(new KeyboardEvent('keyup', {keyCode: 32}));
  for (let i = 0; i < 200 && !r.activated; i++) step();
  r.startGame();
  r.tRex.xPos = r.tRex.xInitialPos = 50;
  if (!args.bot) r.checkForCollision = () => null;
  let held = 0;
  let frames = 0;
  const seen = new Set();
  let fastSpawns = 0;
  let fastFrames = 0;
  while (!r.crashed && frames < args.frames) {
    const t = r.tRex;
    const next = r.horizon.obstacles.find((o) => o.xPos + o.width > t.xPos);
    if (held > 0) {
      held--;
      if (held === 0) t.endJump();
    } else if (args.bot && next && !t.jumping && r.runningTime > r.config.clearTime) {
      const high = next.typeConfig.type === 'pterodactyl' && next.yPos <= 50;
      if (!high && next.xPos - (t.xPos + t.config.width) < r.currentSpeed * args.reach) {
        t.startJump(r.currentSpeed);
        held = 10;
      }
    }
    step();
    frames++;
    if (r.currentSpeed >= r.config.maxSpeed) {
      fastFrames++;
      for (const o of r.horizon.obstacles) if (!seen.has(o)) fastSpawns++;
    }
    for (const o of r.horizon.obstacles) seen.add(o);
  }
  return {frames: frames, crashed: r.crashed, fastSpawns: fastSpawns, fastFrames: fastFrames};
}"""


class Chrome:
    """chrome://dino in a fresh tab for each measurement."""

    def __init__(self, playwright, executable):
        self.browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])

    def page(self, seed=1):
        page = self.browser.new_page()
        try:
            page.goto("chrome://dino")
        except Exception:           # the offline error page is the game; goto reports the error
            pass
        page.wait_for_function("() => typeof Runner === 'function' && !!Runner.getInstance()")
        page.evaluate(CHROME_SETUP, seed)
        return page

    def arc(self, speed):
        return self.page().evaluate(CHROME_ARC, speed)

    def window(self, kind, size, speed, frame_ms):
        page = self.page()
        page.evaluate("() => { const r = Runner.getInstance(); r.playing = r.activated = true; }")
        return page.evaluate(CHROME_WINDOW, {"type": CHROME_TYPES[kind], "size": size, "speed": speed,
                                             "frameMs": frame_ms})

    def run(self, seed, bot, reach=0):
        page = self.page(seed)
        result = page.evaluate(CHROME_RUN, {"bot": bot, "reach": reach, "frames": TEN_MINUTES})
        page.close()
        return result


# -- our side, in the Python port

def our_world(seed=1):
    return server.SimWorld(server.SimRules(server.read_sim_config()), seed, 600)


def our_arc(speed):
    world, rises = our_world(), []
    ground = world.y
    for frame in range(200):
        world.speed = speed
        server.update_trex(world, frame < 10, False)
        rises.append(ground - world.y)
        if not world.jumping:
            break
    return rises


def our_window(kind, size, speed):
    rules = server.SimRules(server.read_sim_config())
    art = next(t for t in rules.obstacles["types"] if t["id"] == kind)
    clear = []
    for x in range(60, 601):
        world = our_world()
        group = server.SimObstacle()
        group.type, group.size, group.x, group.y = art, size, x, rules.ground_y - art["h"]
        group.w, group.h, group.gap, group.speed_offset, group.mirror, group.followed = (
            art["w"] * size, art["h"], 10 ** 9, 0, 0, True)
        world.obstacles = [group]
        hit = False
        for frame in range(400):
            world.speed = speed
            server.update_trex(world, frame < 10, False)
            group.x -= math.floor(speed)
            hit = server.trex_hit(world)
            if hit or group.x + group.w <= 0:
                break
        if not hit:
            clear.append(x)
    return clear


def our_run(seed, bot, reach=0):
    hit = server.trex_hit
    if not bot:
        server.trex_hit = lambda world: False
    try:
        return play(our_world(seed), bot, reach)
    finally:
        server.trex_hit = hit


def play(world, bot, reach):
    held, fast_spawns, fast_frames, seen = 0, 0, 0, []
    while not world.crashed and world.ticks < TEN_MINUTES:
        jump = False
        ahead = [o for o in world.obstacles if o.x + o.w > 50]
        if held > 0:
            held -= 1
            jump = held > 0
        elif bot and ahead and not world.jumping:
            o = ahead[0]
            high = o.type["id"] == "ptero" and o.y <= 50
            if not high and o.x - 94 < world.speed * reach:
                held, jump = 10, True
        server.sim_tick(world, jump, False)
        if world.speed >= world.rules.speed["max"]:
            fast_frames += 1
            fast_spawns += sum(1 for o in world.obstacles if all(o is not s for s in seen))
        seen = list(world.obstacles)
    return {"frames": world.ticks, "crashed": world.crashed, "fastSpawns": fast_spawns,
            "fastFrames": fast_frames}


def window_range(clear):
    """The longest run of consecutive clearing take-off positions."""
    best, start = (0, -1), None
    for i, x in enumerate(clear):
        if i == 0 or x != clear[i - 1] + 1:
            start = x
        if x - start > best[1] - best[0]:
            best = (start, x)
    return best


def survival(runs):
    lasted = sorted(r["frames"] / 3600 for r in runs)
    whole = sum(1 for r in runs if not r["crashed"])
    return f"{whole} of {len(runs)} last 10 min, median {statistics.median(lasted):.1f} min"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=48, help="bot runs per reach (default 48)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        chrome = Chrome(playwright, args.chromium)
        print(f"Chromium: {chrome.browser.version}\n")
        print("Jump arcs, height after each frame (held 10 frames):")
        for speed in (6, 9.5, 13):
            theirs, ours = chrome.arc(speed), our_arc(speed)
            print(f"  speed {speed}: {'same' if theirs == ours else 'DIFFERENT'}  original {theirs}")
            if theirs != ours:
                print(f"  {'':>14} ours     {ours}")
        print("\nJump windows, obstacle x at take-off that clears (first..last, px):")
        print(f"  {'group':<10} {'speed':>5}  {'original 16.67 ms':>18}  {'original 16.6 ms':>17}  {'ours':>10}")
        for kind, size, speed in CASES:
            exact = window_range(chrome.window(kind, size, speed, FRAME_MS))
            short = window_range(chrome.window(kind, size, speed, 16.6))
            ours = window_range(our_window(kind, size, speed))
            cells = [f"{a}..{b} ({b - a + 1})" for a, b in (exact, short, ours)]
            print(f"  {size} {kind:<8} {speed:>5}  {cells[0]:>18}  {cells[1]:>17}  {cells[2]:>10}")
        print("\nObstacles a minute at top speed (no crashes, 3 runs of 10 minutes):")
        for name, run in (("original", chrome.run), ("ours", our_run)):
            runs = [run(seed, bot=False) for seed in (1, 2, 3)]
            per_minute = sum(r["fastSpawns"] for r in runs) / (sum(r["fastFrames"] for r in runs) / 3600)
            print(f"  {name:<8} {per_minute:.1f}")
        print(f"\nA jumping bot, {args.seeds} runs of up to 10 minutes each:")
        for reach in (8, 10, 12):
            theirs = [chrome.run(seed * 7919, bot=True, reach=reach) for seed in range(1, args.seeds + 1)]
            ours = [our_run(seed * 7919, bot=True, reach=reach) for seed in range(1, args.seeds + 1)]
            print(f"  jumps at speed x {reach}: original {survival(theirs)}; ours {survival(ours)}")
        chrome.browser.close()


if __name__ == "__main__":
    main()
