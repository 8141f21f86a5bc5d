/*
 * The game's engine, shared by every page that plays or draws a world: CONFIG,
 * the pure simulation (window.DinoSim) and the world's classes with their
 * drawing (window.DinoDraw). Load it after /sprites.js, which drawing reads.
 * The game page (dino.html) runs it; the board (board.html) draws race ghosts
 * with it. Nothing here reads the keyboard, the network or the page's DOM.
 */
(function () {
  'use strict';

  // =========================================================================
  // CONFIG: every tuning number, in one place. Speeds and distances are in
  // logical pixels per 60 Hz tick on a canvas 150 px high and at most 600 wide.
  // server.py (the "Dino simulation" section) reads this very block to replay runs on the server, so between
  // the two marker lines keep it a plain literal: numbers, strings, arrays,
  // objects, Infinity and comments, but no expressions or references.
  // =========================================================================

  // CONFIG begin
  const CONFIG = {
    ticksPerSecond: 60,              // the simulation always advances in ticks of 1000 / 60 ms
    world: {
      width: 600,                    // the original's canvas; narrower on phones
      minWidth: 200,
      height: 150,
      groundY: 140,                  // bottom edge of anything standing on the ground
      groundLineY: 138,              // the drawn horizon line, under the feet
    },
    speed: { start: 6, max: 13, accel: 0.001 },
    score: {
      perPx: 0.025,                  // points per pixel run: 19.5 points a second at top speed
      digits: 5,
      achievement: 100,              // blink and a tone every this many points
      flashTicks: 120,               // 4 blinks of 250 ms off, 250 ms on, as the original does
      flashPhaseTicks: 15,
      hiInk: 0.8,                    // HI is drawn in this share of the ink, the rest paper
    },
    trex: {
      x: 50,
      w: 44, h: 48,
      duckW: 60, duckH: 24,
      gravity: 0.6,
      jumpVelocity: 10,              // take-off speed is jumpVelocity + speed / jumpSpeedDivisor
      jumpSpeedDivisor: 10,
      dropVelocity: -5,              // releasing early caps the rise at this
      minJumpHeight: 30,             // ... but only once risen more than this
      maxJumpHeight: 63,             // a held jump is cut the same way above this, so it peaks near 90
      speedDropFactor: 3,            // Down in the air falls this much faster
      runFrameTicks: 5,              // legs swap 12 times a second
      duckFrameTicks: 8,
      // Collision boxes [x, y, w, h] from the sprite's top left. Standing and jumping, they are
      // the original's six, placed on our sprite: a head, then a staircase from tail to feet that
      // stays inside the ink and ends 3 px above the ground, so a near miss stays a miss.
      boxes: {
        stand: [[23, 2, 17, 16], [2, 20, 30, 9], [11, 37, 14, 8], [2, 26, 29, 5], [6, 32, 21, 4], [10, 36, 15, 4]],
        duck: [[2, 1, 26, 15], [30, 0, 29, 11], [10, 16, 18, 7]],
      },
    },
    obstacles: {
      clearTimeMs: 3000,             // no obstacle in the first seconds of a run
      maxGroup: 3,
      maxDuplication: 2,             // the same type never three times in a row
      gapCoefficient: 0.6,
      maxGapCoefficient: 1.5,
      // Boxes [x, y, w, h] from the sprite's top left. A cactus's first box is its trunk: in a
      // group the trunks and all between them are one solid box, as in the original.
      types: [
        // A trunk's box starts 1 px under the art's top, as the original's does.
        { id: 'small', w: 17, h: 35, minSpeed: 0, multipleSpeed: 4, minGap: 120,
          boxes: [[6, 1, 5, 34], [2, 11, 4, 10], [12, 6, 3, 11]] },
        { id: 'large', w: 25, h: 50, minSpeed: 0, multipleSpeed: 7, minGap: 120,
          boxes: [[9, 1, 7, 49], [2, 14, 5, 16], [18, 8, 5, 17]] },
        { id: 'ptero', w: 46, h: 40, minSpeed: 8.5, multipleSpeed: Infinity, minGap: 150,
          heights: [100, 75, 50],    // top edge: low (jump it), middle (jump or duck), high (run under)
          speedOffset: 0.8,          // some fly a little faster than the ground, some slower
          flapTicks: 10,
          boxes: [[0, 18, 16, 4], [6, 14, 10, 6], [16, 20, 26, 7]] },
      ],
    },
    horizon: {
      tileWidth: 600,
      bumpyChance: 0.5,
      cloudSpeed: 0.16,              // clouds drift at this fraction of the ground speed
      cloudGap: [100, 400],
      cloudY: [30, 71],
      cloudW: 46,                    // the cloud sprite's width: it leaves the sky when fully past x = 0
      maxClouds: 6,
    },
    night: {
      everyPoints: 700,
      durationTicks: 720,            // about 12 s
      moonSpeed: 0.25,
      starSpeed: 0.3,
      stars: 2,
      starY: [10, 70],
      phases: 4,
      fadeMs: 700,                   // colour change in and out
      reducedFadeMs: 3000,           // prefers-reduced-motion: a slow dusk, never a flash
    },
    restart: { keyDelayMs: 1200 },
    loop: { maxFrameMs: 100 },       // longer stalls are dropped, not replayed at once
    net: {
      topLimit: 10,
      tiedRowsMax: 5,                // children tied at 10th beyond the ten: this many are listed, more are "+N"
      retryMs: [1000, 2000, 4000, 8000], // offline queue backoff, capped at the last
      nameCheckMs: 300,              // ask the server about a name once typing pauses this long
      roundCheckMs: 5000,            // after a change on the board, ask /join for the round at most this often
    },
    storage: { name: 'dino.name', muted: 'dino.muted', pending: 'dino.pending', hi: 'dino.hi',
               nameRound: 'dino.nameRound' },   // the round the saved name was typed in
  };
  // CONFIG end
  const TICK_MS = 1000 / CONFIG.ticksPerSecond;

  // =========================================================================
  // Pixel art: in /sprites.js (window.DinoSprites). Drawing reads it; the
  // simulation below never does.
  // =========================================================================

  const SPRITES = window.DinoSprites.sprites;
  const GROUND_TILES = window.DinoSprites.groundTiles;
  const GROUND_PEBBLES = window.DinoSprites.groundPebbles;
  const GLYPH_ADVANCE = window.DinoSprites.glyphAdvance;

  // =========================================================================
  // Pure simulation helpers: a seeded random stream kept inside the state,
  // and box overlap. Nothing here touches the page.
  // =========================================================================

  /** mulberry32: next float in [0, 1) from the generator state kept in s.rng. */
  function random(s) {
    s.rng = (s.rng + 0x6D2B79F5) >>> 0;
    let t = s.rng;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  function randomInt(s, min, max) { return min + Math.floor(random(s) * (max - min + 1)); }

  function overlaps(a, b) {
    return a[0] < b[0] + b[2] && a[0] + a[2] > b[0] && a[1] < b[1] + b[3] && a[1] + a[3] > b[1];
  }
  /**
   * The ground and the obstacles move whole pixels: the original floors speed x frames elapsed,
   * one frame a tick here. The distance, and so the score, still counts the fractional speed.
   */
  function pxPerTick(speed) { return Math.floor(speed); }
  function shiftBox(box, x, y) { return [box[0] + x, box[1] + y, box[2], box[3]]; }
  /** The coarse box, one pixel in from the sprite's edges like the original's. */
  function outerBox(x, y, w, h) { return [x + 1, y + 1, w - 2, h - 2]; }

  // =========================================================================
  // The T-Rex: jumping, ducking, legs. update() is pure on its plain state.
  // =========================================================================

  class Trex {
    static create() {
      const c = CONFIG.trex;
      return { x: c.x, y: CONFIG.world.groundY - c.h, vy: 0, jumping: false, ducking: false,
        speedDrop: false, reachedMin: false, jumpHeld: false, animTicks: 0, frame: 0, crashed: false };
    }

    static groundTop() { return CONFIG.world.groundY - CONFIG.trex.h; }

    static update(t, input, speed, events) {
      const c = CONFIG.trex;
      // The original starts the jump on the key's down event and moves on the next frame,
      // so the T-Rex leaves the ground on the very tick that first sees the key held.
      if (!t.jumping && input.jump && !input.duck) {
        t.jumping = true;
        t.ducking = false;
        t.vy = -(c.jumpVelocity + speed / c.jumpSpeedDivisor);
        events.push('jump');
      }
      if (t.jumping) {
        // A short hop: the key came up after the rise counted, so the rise is cut. The original
        // forgets a release that comes earlier, which makes a quick tap a full jump.
        const released = t.jumpHeld && !input.jump;
        if (released && t.reachedMin && t.vy < c.dropVelocity) t.vy = c.dropVelocity;
        // Down in the air drops fast from a standstill; letting go of it falls normally again.
        if (input.duck && !t.speedDrop) { t.speedDrop = true; t.vy = 1; }
        if (!input.duck) t.speedDrop = false;
        // Whole pixels, rounded as the original rounds them, so the arc is the original's to the pixel.
        t.y += Math.round(t.vy * (t.speedDrop ? c.speedDropFactor : 1));
        t.vy += c.gravity;
        const risen = Trex.groundTop() - t.y;
        if (risen > c.minJumpHeight || t.speedDrop) t.reachedMin = true;
        // A held key is cut high up, which gives the original's arc.
        if ((risen > c.maxJumpHeight || t.speedDrop) && t.reachedMin && t.vy < c.dropVelocity) t.vy = c.dropVelocity;
        if (t.y > Trex.groundTop()) {
          t.y = Trex.groundTop();
          t.vy = 0;
          t.jumping = t.speedDrop = t.reachedMin = false;
        }
      }
      t.jumpHeld = !!input.jump;
      if (!t.jumping) t.ducking = !!input.duck;
      t.animTicks++;
      const every = t.ducking ? c.duckFrameTicks : c.runFrameTicks;
      if (t.animTicks >= every) { t.animTicks = 0; t.frame = 1 - t.frame; }
    }

    /** Coarse box and part boxes, in world coordinates. */
    static boxes(t) {
      const c = CONFIG.trex;
      if (t.ducking && !t.jumping) {
        const y = CONFIG.world.groundY - c.duckH;
        return { outer: outerBox(t.x, y, c.duckW, c.duckH), parts: c.boxes.duck.map(function (b) { return shiftBox(b, t.x, y); }) };
      }
      return { outer: outerBox(t.x, t.y, c.w, c.h), parts: c.boxes.stand.map(function (b) { return shiftBox(b, t.x, t.y); }) };
    }

    static draw(paint, t, look) {
      const art = SPRITES.trex;
      if (t.crashed) return paint.sprite(art.crashed, t.x, t.y, look);
      if (t.ducking && !t.jumping) return paint.sprite(art.duck[t.frame], t.x, CONFIG.world.groundY - CONFIG.trex.duckH, look);
      if (t.jumping || look.idle) return paint.sprite(look.blink ? art.blink : art.stand, t.x, t.y, look);
      paint.sprite(art.run[t.frame], t.x, t.y, look);
    }
  }

  // =========================================================================
  // Obstacles: cactus groups and pterodactyls, their spacing rules and boxes.
  // =========================================================================

  class Obstacles {
    static type(id) { return CONFIG.obstacles.types.find(function (t) { return t.id === id; }); }

    static update(s) {
      for (const o of s.obstacles) { o.x -= pxPerTick(s.speed + o.speedOffset); o.anim++; }
      s.obstacles = s.obstacles.filter(function (o) { return o.x + o.w > 0; });
      const last = s.obstacles[s.obstacles.length - 1];
      if (!last) {
        Obstacles.spawn(s);
      } else if (!last.followed && last.x + last.w + last.gap < s.width) {
        last.followed = true;
        Obstacles.spawn(s);
      }
    }

    /** True when the last obstacles were all of this type, as many as allowed in a row. */
    static repeatsTooOften(history, id) {
      const max = CONFIG.obstacles.maxDuplication;
      return history.length >= max && history.slice(-max).every(function (h) { return h === id; });
    }

    static spawn(s) {
      const oc = CONFIG.obstacles;
      const allowed = oc.types.filter(function (t) {
        return s.speed >= t.minSpeed && !Obstacles.repeatsTooOften(s.history, t.id);
      });
      const type = allowed[Math.floor(random(s) * allowed.length)];
      let size = randomInt(s, 1, oc.maxGroup);
      if (s.speed < type.multipleSpeed) size = 1;
      const w = type.w * size;
      const y = type.heights ? type.heights[randomInt(s, 0, type.heights.length - 1)] : CONFIG.world.groundY - type.h;
      const speedOffset = type.speedOffset ? (random(s) < 0.5 ? -type.speedOffset : type.speedOffset) : 0;
      const minGap = Math.round(w * s.speed + type.minGap * oc.gapCoefficient);
      const gap = randomInt(s, minGap, Math.round(minGap * oc.maxGapCoefficient));
      // Like the original's, a new obstacle starts one member's width beyond the right edge.
      s.obstacles.push({ type: type.id, size: size, x: s.width + type.w, y: y, w: w, h: type.h, gap: gap,
        speedOffset: speedOffset, anim: 0, mirror: randomInt(s, 0, 7), followed: false });
      s.history.push(type.id);
      if (s.history.length > oc.maxDuplication) s.history.shift();
    }

    /**
     * Coarse box and part boxes, mirrored where the art is. A group, like the original's, is the
     * arms outside its first and last trunks plus one solid box from the first trunk to the last,
     * so nothing slips into the gaps between the members.
     */
    static boxes(o) {
      const outer = outerBox(o.x, o.y, o.w, o.h);
      const first = Obstacles.memberBoxes(o, 0);
      if (o.size === 1) return { outer: outer, parts: first };
      const last = Obstacles.memberBoxes(o, o.size - 1);
      const left = first[0][0];
      const right = last[0][0] + last[0][2];
      const parts = [[left, first[0][1], right - left, first[0][3]]];
      for (const b of first.slice(1)) if (b[0] < left) parts.push(b);
      for (const b of last.slice(1)) if (b[0] >= right) parts.push(b);
      return { outer: outer, parts: parts };
    }

    /** The boxes of member i of a group, in world coordinates; the trunk comes first. */
    static memberBoxes(o, i) {
      const type = Obstacles.type(o.type);
      const left = o.x + i * type.w;
      const mirrored = Obstacles.mirrored(o, i);
      return type.boxes.map(function (b) {
        return [left + (mirrored ? type.w - b[0] - b[2] : b[0]), o.y + b[1], b[2], b[3]];
      });
    }

    static mirrored(o, i) { return o.type !== 'ptero' && ((o.mirror >> i) & 1) === 1; }

    static hit(s) {
      const trex = Trex.boxes(s.trex);
      for (const o of s.obstacles) {
        const ob = Obstacles.boxes(o);
        if (!overlaps(trex.outer, ob.outer)) continue;
        for (const a of trex.parts) {
          for (const b of ob.parts) if (overlaps(a, b)) return true;
        }
      }
      return false;
    }

    static draw(paint, obstacles, look) {
      for (const o of obstacles) {
        if (o.type === 'ptero') {
          const frame = Math.floor(o.anim / Obstacles.type('ptero').flapTicks) % 2;
          paint.sprite(SPRITES.ptero[frame], o.x, o.y, look);
          continue;
        }
        const art = SPRITES[o.type];
        for (let i = 0; i < o.size; i++) paint.sprite(art, o.x + i * art.w, o.y, look, Obstacles.mirrored(o, i));
      }
    }
  }

  // =========================================================================
  // Horizon: the ground (two scrolling tiles, flat or bumpy) and the clouds.
  // =========================================================================

  class Horizon {
    static create(s) {
      return { offset: 0, tiles: ['flat', random(s) < CONFIG.horizon.bumpyChance ? 'bumpy' : 'flat'],
        clouds: [{ x: s.width * 0.6, y: 40 }], nextCloudGap: 200 };
    }

    static update(h, s) {
      const c = CONFIG.horizon;
      h.offset += pxPerTick(s.speed);
      if (h.offset >= c.tileWidth) {
        h.offset -= c.tileWidth;
        h.tiles = [h.tiles[1], random(s) < c.bumpyChance ? 'bumpy' : 'flat'];
      }
      const drift = s.speed * c.cloudSpeed;
      for (const cloud of h.clouds) cloud.x -= drift;
      h.clouds = h.clouds.filter(function (cloud) { return cloud.x + c.cloudW > 0; });
      const last = h.clouds[h.clouds.length - 1];
      if (h.clouds.length < c.maxClouds && (!last || last.x < s.width - h.nextCloudGap)) {
        h.clouds.push({ x: s.width, y: randomInt(s, c.cloudY[0], c.cloudY[1]) });
        h.nextCloudGap = randomInt(s, c.cloudGap[0], c.cloudGap[1]);
      }
    }

    static drawClouds(paint, h, look) {
      for (const cloud of h.clouds) paint.sprite(SPRITES.cloud, cloud.x, cloud.y, look.cloud);
    }

    static drawGround(paint, h, look) {
      const lineY = CONFIG.world.groundLineY;
      const tileW = CONFIG.horizon.tileWidth;
      for (let i = 0; i < h.tiles.length; i++) {
        const left = Math.round(i * tileW - h.offset);
        if (left >= paint.width || left + tileW <= 0) continue;
        const kind = h.tiles[i];
        paint.fill(look.ink);
        paint.rect(left, lineY, tileW, 1);
        for (const p of GROUND_PEBBLES[kind]) paint.rect(left + p[0], lineY + p[1], p[2], 1);
        for (const feature of GROUND_TILES[kind]) {
          const f = SPRITES.features[feature[1]];
          paint.fill(look.paper);
          paint.rect(left + feature[0], lineY, f.sprite.w, 1);
          paint.sprite(f.sprite, left + feature[0], lineY - f.base, look);
        }
      }
    }
  }

  // =========================================================================
  // DistanceMeter: the score, its blink every 100 points, and HI.
  // =========================================================================

  class DistanceMeter {
    static create() { return { flashTicks: 0, flashValue: 0 }; }

    static update(m, before, after, events) {
      const step = CONFIG.score.achievement;
      if (Math.floor(after / step) > Math.floor(before / step)) {
        m.flashTicks = CONFIG.score.flashTicks;
        m.flashValue = Math.floor(after / step) * step;
        events.push('score100');
      } else if (m.flashTicks > 0) {
        m.flashTicks--;
      }
    }

    static pad(n) { return String(Math.max(0, Math.floor(n))).padStart(CONFIG.score.digits, '0'); }

    static draw(paint, m, score, hi, look, crashed) {
      // A crash freezes the world mid-blink; the final score must still show.
      const flashing = m.flashTicks > 0 && !crashed;
      const text = DistanceMeter.pad(flashing ? m.flashValue : score);
      const width = text.length * GLYPH_ADVANCE - 2;
      const x = paint.width - 10 - width;
      // While flashing, the digits are hidden in the even 250 ms phases.
      const phase = Math.floor((CONFIG.score.flashTicks - m.flashTicks) / CONFIG.score.flashPhaseTicks);
      if (!flashing || phase % 2 === 1) paint.text(text, x, 6, look);
      // HI shows from the first run on, 00000 until there is a best, in a lighter ink.
      const hiText = 'HI ' + DistanceMeter.pad(hi);
      paint.alpha(CONFIG.score.hiInk);
      paint.text(hiText, x - 22 - hiText.length * GLYPH_ADVANCE + 2, 6, look);
      paint.alpha(1);
    }
  }

  // =========================================================================
  // NightSky: every 700 points the sky turns dark for a while, with a moon
  // and stars. The simulation says when; the fade itself is drawing.
  // =========================================================================

  class NightSky {
    static create() { return { active: false, ticksLeft: 0, moonX: 0, phase: 0, stars: [], count: 0 }; }

    static update(n, before, after, s) {
      const c = CONFIG.night;
      if (n.active) {
        n.moonX -= c.moonSpeed;
        for (const star of n.stars) star.x -= c.starSpeed;
        if (--n.ticksLeft <= 0) n.active = false;
      } else if (Math.floor(after / c.everyPoints) > Math.floor(before / c.everyPoints)) {
        n.active = true;
        n.ticksLeft = c.durationTicks;
        n.moonX = s.width - 80;
        n.phase = n.count++ % c.phases;
        n.stars = [];
        const band = s.width / c.stars;
        for (let i = 0; i < c.stars; i++) {
          n.stars.push({ x: Math.floor(band * i + random(s) * band), y: randomInt(s, c.starY[0], c.starY[1]) });
        }
      }
    }

    static draw(paint, n, look, now) {
      if (look.nightLevel <= 0) return;
      paint.sprite(SPRITES.moon[n.phase], n.moonX, 24, look.sky);
      n.stars.forEach(function (star, i) {
        const twinkle = Math.floor(now / 400 + i) % 3 === 0 ? 1 : 0;
        paint.sprite(SPRITES.star[twinkle], star.x, star.y, look.sky);
      });
    }
  }

  // =========================================================================
  // GameOverPanel: the lettering and the restart icon.
  // =========================================================================

  class GameOverPanel {
    static draw(paint, look) {
      const text = 'GAME OVER';
      const advance = 14;              // wider spacing than the score, like a headline
      const width = text.length * advance - 4;
      paint.text(text, Math.round((paint.width - width) / 2), 42, look, advance);
      const icon = SPRITES.restart;
      paint.sprite(icon, Math.round((paint.width - icon.w) / 2), 70, look);
    }
  }

  // =========================================================================
  // DinoSim: the whole world as plain data, advanced in fixed 60 Hz ticks.
  // The same inputs give the same world on every screen refresh rate.
  //
  //   create(seed, {width}) -> state     a new world; seed is a uint32
  //   step(state, {jump, duck}, ms)      advances the ticks that fit in ms, keys held
  //                                      throughout; mutates and returns state
  //   score(state) -> points
  //   replay(run, {maxTicks, onTick})    plays a run from the start; returns the final
  //                                      state, at the crash or after maxTicks
  //   run(state) -> run                  the run played so far, as data
  //
  // A run is {seed, width, inputs}: each input [t, jump, duck] (0 or 1) says which
  // keys are held from the tick that takes state.ticks from t to t + 1 on; the
  // ticks strictly increase. server.py replays runs in Python, tick for tick:
  // change one, change the other.
  // State fields to read: ticks, crashed, trex.y, obstacles[].x, obstacles[].type.
  // =========================================================================

  function create(seed, options) {
    const opts = options || {};
    const wanted = Number(opts.width) || CONFIG.world.width;
    const s = {
      seed: Number(seed) >>> 0,
      rng: (Number(seed) >>> 0) || 1,
      width: Math.floor(Math.max(CONFIG.world.minWidth, Math.min(CONFIG.world.width, wanted))),
      inputs: [],                      // the run's key changes, recorded as ticks see them
      obstaclesEnabled: opts.obstacles !== false,
      accMs: 0,
      ticks: 0,
      speed: CONFIG.speed.start,
      distance: 0,
      crashed: false,
      trex: Trex.create(),
      obstacles: [],
      history: [],
      horizon: null,
      meter: DistanceMeter.create(),
      night: NightSky.create(),
      events: [],
    };
    s.horizon = Horizon.create(s);
    return s;
  }

  function score(s) { return Math.floor(s.distance * CONFIG.score.perPx); }

  function tick(s, input) {
    record(s, input);
    s.ticks++;
    Trex.update(s.trex, input, s.speed, s.events);
    Horizon.update(s.horizon, s);
    const hasObstacles = s.obstaclesEnabled && s.ticks * TICK_MS > CONFIG.obstacles.clearTimeMs;
    if (hasObstacles) {
      Obstacles.update(s);
      if (Obstacles.hit(s)) {
        s.crashed = s.trex.crashed = true;
        s.events.push('crash');
        return;
      }
    }
    const before = score(s);
    s.distance += s.speed;
    s.speed = Math.min(CONFIG.speed.max, s.speed + CONFIG.speed.accel);
    const after = score(s);
    DistanceMeter.update(s.meter, before, after, s.events);
    NightSky.update(s.night, before, after, s);
  }

  function step(s, input, dtMs) {
    s.events = [];
    if (s.crashed) return s;
    const held = { jump: !!(input && input.jump), duck: !!(input && input.duck) };
    s.accMs += Math.max(0, Number(dtMs) || 0);
    while (s.accMs >= TICK_MS && !s.crashed) {
      s.accMs -= TICK_MS;
      tick(s, held);
    }
    return s;
  }

  /** Notes the held keys when they differ from the last noted, so the state carries its own run. */
  function record(s, input) {
    const jump = input.jump ? 1 : 0;
    const duck = input.duck ? 1 : 0;
    const last = s.inputs[s.inputs.length - 1] || [0, 0, 0];
    if (jump !== last[1] || duck !== last[2]) s.inputs.push([s.ticks, jump, duck]);
  }

  function run(s) {
    return { seed: s.seed, width: s.width, inputs: s.inputs.map(function (entry) { return entry.slice(); }) };
  }

  /** Throws on a run that is not data of the documented shape; ranges are the server's business. */
  function checkRun(r) {
    const bit = function (v) { return v === 0 || v === 1; };
    if (!r || !Number.isInteger(r.seed) || !Number.isInteger(r.width) || !Array.isArray(r.inputs)) {
      throw new TypeError('a run is {seed, width, inputs} with integer seed and width');
    }
    let previous = -1;
    for (const entry of r.inputs) {
      if (!Array.isArray(entry) || entry.length !== 3 || !Number.isInteger(entry[0]) || entry[0] <= previous ||
          !bit(entry[1]) || !bit(entry[2])) {
        throw new TypeError('each input is [tick, jump, duck] with ticks increasing and keys 0 or 1');
      }
      previous = entry[0];
    }
  }

  function replay(r, options) {
    checkRun(r);
    const opts = options || {};
    const maxTicks = opts.maxTicks === undefined ? CONFIG.ticksPerSecond * 3600 : opts.maxTicks;
    const s = create(r.seed, { width: r.width });
    const held = { jump: false, duck: false };
    let next = 0;
    while (!s.crashed && s.ticks < maxTicks) {
      const change = r.inputs[next];
      if (change && change[0] === s.ticks) {
        held.jump = change[1] === 1;
        held.duck = change[2] === 1;
        next++;
      }
      s.events = [];                   // onTick sees this tick's events, as a watch mode would play them
      tick(s, held);
      if (opts.onTick) opts.onTick(s);
    }
    return s;
  }

  function deepFreeze(value) {
    if (value && typeof value === 'object' && !Object.isFrozen(value)) {
      Object.freeze(value);
      Object.values(value).forEach(deepFreeze);
    }
    return value;
  }
  deepFreeze(CONFIG);
  const DinoSim = Object.freeze({ CONFIG: CONFIG, create: create, step: step, score: score, replay: replay, run: run });
  Object.defineProperty(window, 'DinoSim', { value: DinoSim, enumerable: true });

  // =========================================================================
  // Painter: draws runs of pixels snapped to device pixels, so the art stays
  // crisp at any devicePixelRatio (1, 1.5, 2.625, 3 ...).
  // =========================================================================

  function hexToRgb(hex) {
    const n = parseInt(hex.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }
  function mix(a, b, t) {
    const ca = hexToRgb(a);
    const cb = hexToRgb(b);
    return 'rgb(' + ca.map(function (v, i) { return Math.round(v + (cb[i] - v) * t); }).join(',') + ')';
  }

  class Painter {
    constructor(canvas) {
      this.canvas = canvas;
      this.ctx = canvas.getContext('2d', { alpha: false });
      this.width = CONFIG.world.width;
      this.k = 1;
      this.ratio = 0;
    }

    /** Sizes the backing store to the element's CSS size times the device pixel ratio. */
    resize() {
      const cssWidth = this.canvas.getBoundingClientRect().width || CONFIG.world.width;
      const ratio = window.devicePixelRatio || 1;
      this.ratio = ratio;
      this.width = Math.max(CONFIG.world.minWidth, Math.min(CONFIG.world.width, cssWidth));
      const deviceW = Math.round(cssWidth * ratio);
      const deviceH = Math.round(CONFIG.world.height * ratio);
      if (this.canvas.width !== deviceW) this.canvas.width = deviceW;
      if (this.canvas.height !== deviceH) this.canvas.height = deviceH;
      this.k = deviceW / cssWidth;
    }

    fill(color) { this.ctx.fillStyle = color; }

    /** Share of the colour that covers what is under it: 1 is opaque. */
    alpha(value) { this.ctx.globalAlpha = value; }

    rect(x, y, w, h) {
      const k = this.k;
      const x0 = Math.round(x * k);
      const y0 = Math.round(y * k);
      this.ctx.fillRect(x0, y0, Math.round((x + w) * k) - x0, Math.round((y + h) * k) - y0);
    }

    clear(color) {
      this.ctx.fillStyle = color;
      this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    }

    sprite(spr, x, y, look, mirrored) {
      const ox = Math.round(x);
      const oy = Math.round(y);
      const s = spr.scale;
      const runs = [[spr.paper, look.paper], [spr.ink, look.ink]];
      for (const pair of runs) {
        if (!pair[0].length) continue;
        this.ctx.fillStyle = pair[1];
        for (const r of pair[0]) {
          const rx = mirrored ? spr.w - r[0] - r[2] : r[0];
          this.rect(ox + rx, oy + r[1], r[2], s);
        }
      }
    }

    text(str, x, y, look, advance) {
      const step = advance || GLYPH_ADVANCE;
      for (let i = 0; i < str.length; i++) {
        const glyph = SPRITES.glyphs[str[i]];
        if (glyph) this.sprite(glyph, x + i * step, y, look);
      }
    }
  }

  // =========================================================================
  // Palette: day colours, night colours, and the blend between them.
  // =========================================================================

  const PALETTE = {
    day: { paper: '#ffffff', ink: '#535353', cloud: '#c4c4c4' },
    night: { paper: '#111111', ink: '#acacac', cloud: '#4a4a4a' },
    // prefers-reduced-motion: a dimmer dusk instead of a full inversion.
    dusk: { paper: '#3b3d40', ink: '#d6d6d6', cloud: '#5a5c60' },
  };

  function lookFor(nightLevel, reduced) {
    const day = PALETTE.day;
    const night = reduced ? PALETTE.dusk : PALETTE.night;
    const at = function (key) { return mix(day[key], night[key], nightLevel); };
    const paper = at('paper');
    const look = { paper: paper, ink: at('ink'), nightLevel: nightLevel };
    look.cloud = { paper: paper, ink: at('cloud') };
    // The moon and stars fade in with the night rather than pop.
    look.sky = { paper: paper, ink: mix(night.paper, night.ink, nightLevel) };
    return look;
  }

  // =========================================================================
  // DinoDraw: what a page needs to draw a world that DinoSim advances.
  //
  //   new Painter(canvas)               paint.resize() fits the canvas to its CSS width
  //   lookFor(nightLevel, reduced)      the colours; look.idle and look.blink are the caller's
  //   Trex.draw, Obstacles.draw, Horizon.drawClouds / drawGround, DistanceMeter.draw,
  //   NightSky.draw, GameOverPanel.draw
  // =========================================================================

  const DinoDraw = Object.freeze({ Painter: Painter, lookFor: lookFor, PALETTE: PALETTE, Trex: Trex,
    Obstacles: Obstacles, Horizon: Horizon, DistanceMeter: DistanceMeter, NightSky: NightSky,
    GameOverPanel: GameOverPanel });
  Object.defineProperty(window, 'DinoDraw', { value: DinoDraw, enumerable: true });
})();
