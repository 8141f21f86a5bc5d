"""The game's simulation: it plays like the original, and server.py replays a run to the same tick.

The page's own DinoSim runs in Chromium; the Python port runs here; both read
the one CONFIG block in game/engine.js. Input logs come from seeded random
generators, so a failure names a log that reproduces.
"""

import random

import pytest

import server  # the Python port lives in server.py, under "Dino simulation"
from conftest import ROOT

ENGINE_JS = ROOT / "game" / "engine.js"
GROUND_TOP = 140 - 48          # the T-Rex's top edge while it stands: ground y minus its height
JS_BATCH = 40                  # runs per page.evaluate, so one call never holds the page for long

REPLAY_JS = """(runs) => runs.map(function (r) {
  const samples = [];
  const s = DinoSim.replay({seed: r.seed, width: r.width, inputs: r.inputs}, {maxTicks: r.maxTicks,
    onTick: function (state) {
      if (state.ticks % 600 === 0) {
        samples.push([state.ticks, state.trex.y, state.obstacles.map(function (o) { return [o.x, o.type]; })]);
      }
    }});
  return {score: DinoSim.score(s), crashed: s.crashed, ticks: s.ticks, samples: samples};
})"""

@pytest.fixture
def sim(open_tab):
    """The game page, for its DinoSim."""
    page = open_tab("/").page
    page.wait_for_function("() => !!window.DinoSim")
    return page


def peak_height(sim, inputs):
    """How high the T-Rex rises over the first 170 ticks of a run with these inputs."""
    top = sim.evaluate("""(inputs) => {
      let top = Infinity;
      DinoSim.replay({seed: 1, width: 600, inputs: inputs}, {maxTicks: 170,
        onTick: function (s) { top = Math.min(top, s.trex.y); }});
      return top;
    }""", inputs)
    return GROUND_TOP - top


# ================================================================ plays like the original

def test_obstacles_enter_one_member_width_beyond_the_right_edge(sim):
    entries = sim.evaluate("""() => {
      const seen = [];
      for (const width of [600, 451, 200]) {
        for (let seed = 1; seed <= 12; seed++) {
          const s = DinoSim.create(seed, {width: width});
          while (!s.obstacles.length) DinoSim.step(s, {jump: false, duck: false}, 1000 / 60);
          seen.push([width, s.obstacles[0].type, s.obstacles[0].x]);
        }
      }
      return seen;
    }""")
    assert {kind for _, kind, _ in entries} == {"small", "large"}
    member_width = {"small": 17, "large": 25}
    assert [x for _, _, x in entries] == [width + member_width[kind] for width, kind, _ in entries]


def test_trex_leaves_the_ground_on_the_first_tick_the_jump_key_is_held(sim):
    heights = sim.evaluate("""() => [100, 101].map(function (ticks) {
      return DinoSim.replay({seed: 3, width: 600, inputs: [[100, 1, 0]]}, {maxTicks: ticks}).trex.y;
    })""")
    assert heights[0] == GROUND_TOP
    assert heights[1] < GROUND_TOP


def test_tap_released_before_the_minimum_height_is_a_full_jump(sim):
    tap = peak_height(sim, [[60, 1, 0], [61, 0, 0]])
    held = peak_height(sim, [[60, 1, 0], [94, 0, 0]])
    assert tap == held
    assert 85 < tap < 95          # the original's full jump peaks near 90 px


def test_release_after_the_minimum_height_cuts_the_jump_short(sim):
    hop = peak_height(sim, [[60, 1, 0], [66, 0, 0]])
    assert 30 <= hop < 80


def test_cactus_group_is_solid_from_its_first_trunk_to_its_last(sim):
    # A T-Rex held in the air over the space between two large cacti: the original's group has no
    # space there. Higher up it clears the group, so the crash comes from the middle box alone.
    crashed = sim.evaluate("""() => [50, 30].map(function (y) {
      const s = DinoSim.create(1, {width: 600});
      s.ticks = 1000;
      s.speed = 0;
      s.obstacles = [{type: 'large', size: 2, x: 42, y: 90, w: 50, h: 50, gap: 1e9, speedOffset: 0,
        anim: 0, mirror: 0, followed: true}];
      Object.assign(s.trex, {y: y, vy: 0, jumping: true, jumpHeld: true});
      DinoSim.step(s, {jump: true, duck: false}, 1000 / 60);
      return s.crashed;
    })""")
    assert crashed == [True, False]


# Measured in chrome://dino of Debian's Chromium 156, driven one 1000/60 ms frame at a time by
# tools/chrome_compare.py: how high the T-Rex is after each frame of a jump, and the obstacle x
# at take-off for which a jump clears a group (the jump window).
ORIGINAL_ARCS = {
    6: [11, 21, 30, 39, 47, 55, 62, 68, 73, 77, 81, 84, 87, 89, 90, 91, 91, 91, 90, 88, 86, 83, 80, 76,
        71, 66, 60, 54, 47, 39, 31, 22, 13, 3, 0],
    9.5: [11, 21, 31, 40, 49, 57, 64, 69, 73, 77, 80, 83, 85, 86, 87, 87, 87, 86, 84, 82, 79, 76, 72, 67,
          62, 56, 50, 43, 35, 27, 18, 9, 0],
    13: [11, 22, 32, 42, 51, 59, 67, 72, 76, 80, 83, 86, 88, 89, 90, 90, 90, 89, 87, 85, 82, 79, 75, 70,
         65, 59, 53, 46, 38, 30, 21, 12, 2, 0],
}
# Down held for frames 12 to 14 of a jump at speed 6, then let go: a fast drop, then a normal fall.
ORIGINAL_SPEED_DROP_ARC = [11, 21, 30, 39, 47, 55, 62, 68, 73, 77, 81, 84, 81, 76, 69, 66, 63, 59, 54, 49,
                           43, 37, 30, 22, 14, 5, 0]
ORIGINAL_WINDOWS = [     # (kind, size, speed, first x that clears, last x that clears)
    ("small", 3, 6, 88, 201),
    ("large", 2, 8, 98, 258),
    ("small", 1, 13, 100, 440),
    ("large", 1, 13, 118, 421),
    ("large", 3, 13, 118, 370),
]

ARC_JS = """(args) => {
  const s = DinoSim.create(1, {width: 600, obstacles: false});
  const ground = s.trex.y;
  const rises = [];
  for (let tick = 0; tick === 0 || s.trex.jumping; tick++) {
    s.speed = args.speed;
    DinoSim.step(s, {jump: tick < 10, duck: tick >= args.dropFrom && tick < args.dropTo}, 1000 / 60);
    rises.push(ground - s.trex.y);
  }
  return rises;
}"""


def test_jump_arc_is_the_originals_to_the_pixel(sim):
    for speed, arc in ORIGINAL_ARCS.items():
        assert sim.evaluate(ARC_JS, {"speed": speed, "dropFrom": -1, "dropTo": -1}) == arc, speed
    assert sim.evaluate(ARC_JS, {"speed": 6, "dropFrom": 12, "dropTo": 15}) == ORIGINAL_SPEED_DROP_ARC


def test_jump_windows_over_cactus_groups_match_the_original(sim):
    # The original's obstacles move floor(speed) whole pixels a frame, so at speed 6 the window
    # over three small cacti is 114 px. (Frames a hair shorter than 1000/60 ms move them 5 px at
    # exactly speed 6, which gives the 85 px once measured; by speed 6.03 it is 6 px again.)
    windows = sim.evaluate("""(cases) => cases.map(function (c) {
      const clear = [];
      for (let x = 60; x <= 600; x++) {
        const s = DinoSim.create(1, {width: 600});
        s.ticks = 1000;                                  // past the first seconds without obstacles
        const type = DinoSim.CONFIG.obstacles.types.find(function (t) { return t.id === c[0]; });
        const group = {type: c[0], size: c[1], x: x, y: 140 - type.h, w: type.w * c[1], h: type.h,
          gap: 1e9, speedOffset: 0, anim: 0, mirror: 0, followed: true};
        s.obstacles = [group];
        for (let tick = 0; !s.crashed && s.obstacles.indexOf(group) >= 0; tick++) {
          s.speed = c[2];
          DinoSim.step(s, {jump: tick < 10, duck: false}, 1000 / 60);
        }
        if (!s.crashed) clear.push(x);
      }
      let best = [0, -1];                                // the longest run of clearing take-offs
      let start = clear[0];
      clear.forEach(function (x, i) {
        if (i > 0 && x !== clear[i - 1] + 1) start = x;
        if (x - start > best[1] - best[0]) best = [start, x];
      });
      return best;
    })""", [list(case[:3]) for case in ORIGINAL_WINDOWS])
    assert len(windows) == len(ORIGINAL_WINDOWS)
    for (kind, size, speed, first, last), (ours_first, ours_last) in zip(ORIGINAL_WINDOWS, windows):
        # Our art is our own, so the boxes differ a little: within half a frame of travel.
        assert abs(ours_first - first) <= speed / 2, (kind, size, speed, ours_first, ours_last)
        assert abs(ours_last - last) <= speed / 2, (kind, size, speed, ours_first, ours_last)


def test_ground_and_obstacles_move_whole_pixels_while_the_score_counts_the_speed(sim):
    moves = sim.evaluate("""() => {
      const s = DinoSim.create(7, {width: 600});
      while (s.ticks < 2000 && !s.obstacles.length) DinoSim.step(s, {jump: false, duck: false}, 1000 / 60);
      s.speed = 6.75;
      const o = s.obstacles[0];
      const before = [o.x, s.distance, s.horizon.offset];
      DinoSim.step(s, {jump: false, duck: false}, 1000 / 60);
      return [o.x - before[0], s.distance - before[1], s.horizon.offset - before[2]];
    }""")
    assert moves == [-6, 6.75, 6]


def test_score_blinks_for_two_seconds_after_each_hundred_points(sim):
    score, flashed_ticks = sim.evaluate("""() => {
      const s = DinoSim.create(5, {obstacles: false});
      let flashed = 0;
      for (let i = 0; i < 1200; i++) {
        DinoSim.step(s, {jump: false, duck: false}, 1000 / 60);
        if (s.meter.flashTicks > 0) flashed++;
      }
      return [DinoSim.score(s), flashed];
    }""")
    assert 100 <= score < 200                  # one hundred crossed, once
    assert flashed_ticks == 120                # 4 blinks of 250 ms off and on: 2 s at 60 ticks a second


def test_hi_shows_00000_in_a_lighter_ink_from_the_first_run(sim):
    # HI 00000 sits left of the score, top right; 80 % of the ink #535353 on white is #757575.
    colours = sim.evaluate("""() => {
      const c = document.getElementById('game');
      const k = c.width / c.getBoundingClientRect().width;
      const data = c.getContext('2d').getImageData(Math.round(400 * k), Math.round(4 * k),
        Math.round(120 * k), Math.round(18 * k)).data;
      const seen = {};
      for (let i = 0; i < data.length; i += 4) seen[data[i] + ',' + data[i + 1] + ',' + data[i + 2]] = 1;
      return Object.keys(seen);
    }""")
    assert "117,117,117" in colours
    assert "83,83,83" not in colours           # and none of it in the full ink of the score


# ================================================================ one source of truth

def test_python_port_reads_the_same_config_as_the_page(sim):
    page_config = sim.evaluate("() => DinoSim.CONFIG")
    assert server.load_sim_config(ENGINE_JS.read_text(encoding="utf-8")) == page_config


# ================================================================ tick for tick

def random_presses(rnd):
    """A run of random key changes, some short taps, some long holds, now and then both keys."""
    inputs, held, tick = [], (0, 0), rnd.randrange(0, 3)
    while tick < 4000:
        keys = rnd.choice([(1, 0), (0, 0), (0, 1), (1, 1), (1, 0), (0, 0)])
        if keys != held:
            inputs.append([tick, *keys])
            held = keys
        tick += rnd.choice([1, 1, 2, 5, 9, 20, 40, 90])
    return {"seed": rnd.getrandbits(32), "width": rnd.choice([600, 600, 451, 390, 200]), "inputs": inputs,
            "maxTicks": 6000}


def bot_run(config, seed, width, max_ticks, reach):
    """A bot that looks at the next obstacle and jumps or ducks; reach scales how early it jumps."""
    world = server.SimWorld(server.SimRules(config), seed, width)
    inputs, held = [], (0, 0)
    while not world.crashed and world.ticks < max_ticks:
        keys = bot_keys(world, reach)
        if keys != held:
            inputs.append([world.ticks, *keys])
            held = keys
        server.sim_tick(world, keys[0] == 1, keys[1] == 1)
    return {"seed": seed, "width": width, "inputs": inputs, "maxTicks": max_ticks}


def bot_keys(world, reach):
    ahead = [o for o in world.obstacles if o.x + o.w > 50]
    if not ahead:
        return (0, 0)
    o = ahead[0]
    distance = o.x - 94
    if o.type["id"] == "ptero" and o.y <= 50:
        return (0, 0)                          # flies over a standing T-Rex
    if o.type["id"] == "ptero" and o.y == 75:
        return (0, 1 if distance < 60 else 0)
    if world.jumping:
        return (1, 1 if o.x + o.w < 45 else 0)   # past it: drop fast
    return (1 if -o.w < distance < world.speed * 6 * reach + o.w / 2 else 0, 0)


def edge_case_runs(config):
    return {
        "keys at tick 0": {"seed": 0, "width": 600, "inputs": [[0, 1, 0], [5, 0, 0]], "maxTicks": 3000},
        "jump held through the crash": {"seed": 11, "width": 600, "inputs": [[40, 1, 0]], "maxTicks": 6000},
        "duck in the air": {"seed": 12, "width": 600,
                            "inputs": [[0, 1, 0], [8, 1, 1], [12, 0, 0], [190, 1, 0], [196, 0, 1], [230, 0, 0]],
                            "maxTicks": 3000},
        "both keys at once": {"seed": 13, "width": 390, "inputs": [[0, 1, 1], [50, 0, 0], [60, 1, 1]],
                              "maxTicks": 3000},
        "release before the minimum height": {"seed": 14, "width": 600, "inputs": [[0, 1, 0], [1, 0, 0]],
                                              "maxTicks": 3000},
        "largest seed, narrowest screen": {"seed": 2**32 - 1, "width": 200, "inputs": [[3, 1, 0], [4, 0, 0]],
                                           "maxTicks": 3000},
        "across 100 points": bot_run(config, 21, 600, 3000, 1.0),
        "across the night switch": bot_run(config, 2 * 7919, 600, 20000, 1.0),
    }


def python_result(config, run):
    result = server.replay_run(config, run["seed"], run["width"], run["inputs"], run["maxTicks"])
    samples = [[ticks, y, [[x, kind] for x, kind in obstacles]] for ticks, y, obstacles in result["samples"]]
    return {"score": result["score"], "crashed": result["crashed"], "ticks": result["ticks"], "samples": samples}


def test_python_port_replays_every_run_as_the_page_does(sim):
    config = server.load_sim_config(ENGINE_JS.read_text(encoding="utf-8"))
    rnd = random.Random(20240611)
    edge = edge_case_runs(config)
    runs = list(edge.values())
    runs += [random_presses(rnd) for _ in range(140)]
    runs += [bot_run(config, rnd.getrandbits(32), rnd.choice([600, 451, 300]), 8000, rnd.uniform(0.8, 1.2))
             for _ in range(60)]
    assert len(runs) >= 200

    # The edge cases are what they say they are.
    python = [python_result(config, run) for run in runs]
    by_name = dict(zip(edge, python))
    assert by_name["jump held through the crash"]["crashed"]
    assert 100 < by_name["across 100 points"]["score"]
    assert 700 < by_name["across the night switch"]["score"]
    assert sum(result["ticks"] > 1200 for result in python) >= 50     # many runs get past two samples

    page = []
    for start in range(0, len(runs), JS_BATCH):
        page += sim.evaluate(REPLAY_JS, runs[start:start + JS_BATCH])
    for index, (mine, theirs) in enumerate(zip(python, page)):
        assert mine == theirs, f"run {index} ({runs[index]['seed']}, width {runs[index]['width']}) differs"


@pytest.mark.parametrize("inputs", [
    [[5, 1, 0], [5, 0, 0]],          # the same tick twice
    [[9, 1, 0], [4, 0, 0]],          # ticks going back
    [[0, 2, 0]],                     # a key is 0 or 1
    [[0, True, 0]],                  # ... not a boolean
    [[0, 1]],                        # three numbers to an input
    "[[0, 1, 0]]",                   # a list, not its JSON text
])
def test_python_port_refuses_malformed_inputs(inputs):
    config = server.load_sim_config(ENGINE_JS.read_text(encoding="utf-8"))
    with pytest.raises(ValueError):
        server.replay_run(config, 1, 600, inputs, 600)
