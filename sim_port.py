"""Dino simulation: the page's DinoSim (game/dino.html) in Python, tick for tick.

The server replays a posted run's inputs here instead of taking its score on
trust. Every number comes from the CONFIG block of game/dino.html, so the page
and the server cannot disagree about the rules; every step copies the order of
the JavaScript's floating-point operations, so both reach the same bits.
Change the simulation in one place, change it in the other.
"""

import math

# ---------------------------------------------------------------- Dino simulation

CONFIG_BEGIN = "// CONFIG begin"        # the marker lines around CONFIG in game/dino.html
CONFIG_END = "// CONFIG end"
SAMPLE_TICKS = 600                      # replay() records the world every this many ticks (10 s)
UINT32 = 0xFFFFFFFF
TWO_32 = 4294967296.0


class ConfigError(ValueError):
    """The CONFIG block is missing or is not a plain literal."""


# ---- reading CONFIG out of the page

def load_config(html_text):
    """The page's CONFIG object literal as a Python dict."""
    begin = html_text.find(CONFIG_BEGIN)
    end = html_text.find(CONFIG_END, begin)
    if begin < 0 or end < 0:
        raise ConfigError(f"no {CONFIG_BEGIN!r} ... {CONFIG_END!r} block in the page")
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


# ---- JavaScript arithmetic the simulation relies on

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


# ---- the world

class Rules:
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


class Obstacle:
    __slots__ = ("type", "size", "x", "y", "w", "h", "gap", "speed_offset", "mirror", "followed")


class World:
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


def score(world):
    return math.floor(world.distance * world.rules.per_px)


def tick(world, jump, duck):
    """One 60 Hz step, in the page's order: T-Rex, horizon, obstacles and the crash, then distance."""
    world.ticks += 1
    update_trex(world, jump, duck)
    update_horizon(world)
    rules = world.rules
    if world.ticks * rules.tick_ms > rules.obstacles["clearTimeMs"]:
        update_obstacles(world)
        if hit(world):
            world.crashed = True
            return
    before = score(world)
    world.distance += world.speed
    world.speed = min(rules.speed["max"], world.speed + rules.speed["accel"])
    update_night(world, before, score(world))


def update_trex(w, jump, duck):
    c = w.rules.trex
    if not w.jumping and jump and not duck:
        w.jumping, w.ducking = True, False
        w.vy = -(c["jumpVelocity"] + w.speed * c["jumpSpeedFactor"])
    if w.jumping:
        # The original forgets a release that comes before the rise counts: a tap is a full jump.
        if w.jump_held and not jump and w.reached_min and w.vy < c["dropVelocity"]:
            w.vy = c["dropVelocity"]
        if duck and not w.speed_drop:
            w.speed_drop = True
            w.vy = max(w.vy, 1)
        w.y += w.vy * (c["speedDropFactor"] if w.speed_drop else 1)
        w.vy += c["gravity"]
        risen = w.rules.ground_top - w.y
        if risen >= c["minJumpHeight"]:
            w.reached_min = True
        if (risen >= c["maxJumpHeight"] or w.speed_drop) and w.vy < c["dropVelocity"]:
            w.vy = c["dropVelocity"]
        if w.y >= w.rules.ground_top:
            w.y, w.vy = w.rules.ground_top, 0
            w.jumping = w.speed_drop = w.reached_min = False
    w.jump_held = jump
    if not w.jumping:
        w.ducking = duck


def update_horizon(w):
    c = w.rules.horizon
    w.offset += w.speed
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
        o.x -= w.speed + o.speed_offset
    w.obstacles = [o for o in w.obstacles if o.x + o.w > 0]
    if not w.obstacles:
        spawn(w)
    else:
        last = w.obstacles[-1]
        if not last.followed and last.x + last.w + last.gap < w.width:
            last.followed = True
            spawn(w)


def spawn(w):
    """A new obstacle, drawing random numbers in exactly the page's order."""
    c = w.rules.obstacles
    most = c["maxDuplication"]
    allowed = [t for t in c["types"] if w.speed >= t["minSpeed"] and not (
        len(w.history) >= most and all(h == t["id"] for h in w.history[-most:]))]
    kind = allowed[math.floor(next_random(w) * len(allowed))]
    size = random_int(w, 1, c["maxGroup"])
    if w.speed < kind["multipleSpeed"]:
        size = 1
    o = Obstacle()
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


# ---- collisions

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


def hit(w):
    outer, parts = trex_boxes(w)
    for o in w.obstacles:
        if not overlaps(outer, [o.x + 1, o.y + 1, o.w - 2, o.h - 2]):
            continue
        if any(overlaps(a, b) for b in obstacle_parts(o) for a in parts):
            return True
    return False


# ---- replaying a run

def check_run(seed, width, inputs, max_ticks):
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


def replay(config, seed, width, inputs, max_ticks):
    """Play a run from its inputs until the crash or max_ticks; the score, the crash and samples."""
    check_run(seed, width, inputs, max_ticks)
    world = World(Rules(config), seed, width)
    changes = {entry[0]: (entry[1] == 1, entry[2] == 1) for entry in inputs}
    jump = duck = False
    samples = []
    while not world.crashed and world.ticks < max_ticks:
        if world.ticks in changes:
            jump, duck = changes[world.ticks]
        tick(world, jump, duck)
        if world.ticks % SAMPLE_TICKS == 0:
            samples.append((world.ticks, world.y, [(o.x, o.type["id"]) for o in world.obstacles]))
    return {"score": score(world), "crashed": world.crashed, "crash_tick": world.ticks if world.crashed else None,
            "ticks": world.ticks, "samples": samples}
