// DinoClient: everything the game page says to the server, and what it keeps
// in the browser while the server cannot hear it. The page (dino.html) draws
// and plays; this file asks and posts. Every request carries the device's
// Player-Key, the secret a name is claimed with.
//
//   DinoClient.store.get(key) / .set(key, value)     localStorage, or nothing
//   DinoClient.playerKey()                            this device's secret
//   DinoClient.request(url, init)                     fetch with the Player-Key
//   await DinoClient.checkName(typed)                 {typed, name, yours, error} or null
//   await DinoClient.suggestName()                    a reserved free name, or null
//   await DinoClient.currentRound()                   /join's round id, or null
//   await DinoClient.topPlayers(limit)                /players rows with ties; throws a sentence
//   await DinoClient.recordedRun(id)                  a kept verified run; throws a sentence
//   new DinoClient.RunTickets()                       a small stock of run tickets
//   new DinoClient.ScoreQueue({...})                  finished runs, kept until the server has them
//   new DinoClient.RaceClock()                        the server's clock; await .raceOn() the race on now
//   await DinoClient.joinRace(id, name)               {race} or {error, status}
//   new DinoClient.RaceSender({...})                  a race run's keys, sent as it is played
(function () {
  'use strict';

  // =========================================================================
  // Storage: localStorage can be missing or full (private mode); the game
  // must play anyway.
  // =========================================================================

  const store = Object.freeze({
    get: function (key) {
      try { return window.localStorage.getItem(key); } catch (err) { return null; }
    },
    set: function (key, value) {
      try { window.localStorage.setItem(key, value); return true; } catch (err) { return false; }
    },
  });

  function plural(n, word) { return n + ' ' + word + (n === 1 ? '' : 's'); }

  // =========================================================================
  // The Player-Key: 32 random bytes made once per browser, kept in
  // localStorage and sent with every request. The first post under a name
  // claims the name for this key, so another device cannot post as this
  // child. Without localStorage the key lives as long as the tab.
  // =========================================================================

  const PLAYER_KEY_STORAGE = 'dino-player-key';   // one key for every page of this server in this browser
  const PLAYER_KEY_BYTES = 32;                    // 43 characters of base64url; the server takes 16 to 128
  const PLAYER_KEY_SHAPE = /^[A-Za-z0-9_-]{16,128}$/;
  let tabKey = null;                              // the key, while localStorage will not keep one

  function newPlayerKey() {
    const bytes = new Uint8Array(PLAYER_KEY_BYTES);
    window.crypto.getRandomValues(bytes);
    return window.btoa(String.fromCharCode.apply(null, bytes))
      .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  /** This browser's key. Read from localStorage each time, so tabs opened together settle on one. */
  function playerKey() {
    const kept = store.get(PLAYER_KEY_STORAGE);
    if (kept !== null && PLAYER_KEY_SHAPE.test(kept)) return kept;
    if (tabKey === null) tabKey = newPlayerKey();
    store.set(PLAYER_KEY_STORAGE, tabKey);
    return tabKey;
  }

  /** fetch() with the Player-Key header and no cache; rejects as fetch does when the server is out of reach. */
  function request(url, init) {
    const options = Object.assign({ cache: 'no-store' }, init || {});
    options.headers = Object.assign({}, options.headers || {}, { 'Player-Key': playerKey() });
    return fetch(url, options);
  }

  /** Milliseconds a 429 asks us to wait (Retry-After in seconds), at least `floorMs`. */
  function retryAfterMs(response, floorMs) {
    const seconds = Number(response.headers.get('Retry-After'));
    return Math.max(floorMs, Number.isFinite(seconds) ? seconds * 1000 : 0);
  }

  /** The server's sentence from an error answer, or the status line when it sent none. */
  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === 'string') return body.error.slice(0, 300);
    } catch (err) { /* not JSON: fall back to the status line */ }
    return 'HTTP ' + response.status + (response.statusText ? ' ' + response.statusText : '');
  }

  // =========================================================================
  // Asking: names, the round, the top players, recorded runs.
  // =========================================================================

  // Answers of /names/check that are about the name itself: rude or too long (400), new names
  // closed (403), someone else's name or a lookalike of one (409).
  const NAME_REFUSALS = [400, 403, 409];

  /**
   * {typed, name, yours, error}: the server's spelling of the name (and whether this device
   * already holds it) or its reason to refuse it; null if it did not say.
   */
  async function checkName(typed) {
    let response;
    try {
      response = await request('/names/check?name=' + encodeURIComponent(typed));
    } catch (err) {
      return null;                     // offline, or a lone surrogate that cannot go in a URL
    }
    if (response.status !== 200 && !NAME_REFUSALS.includes(response.status)) return null;
    let body;
    try { body = await response.json(); } catch (err) { return null; }
    if (response.ok && body && typeof body.name === 'string') {
      return { typed: typed, name: body.name, yours: body.yours === true, error: '' };
    }
    if (!response.ok && body && typeof body.error === 'string') {
      return { typed: typed, name: '', yours: false, error: body.error.slice(0, 300) };
    }
    return null;
  }

  /** A free friendly name the server keeps for this device a few minutes; null if none came. */
  async function suggestName() {
    try {
      const response = await request('/names/suggest');
      const body = response.ok ? await response.json() : null;
      return body && typeof body.name === 'string' ? body.name : null;
    } catch (err) {
      return null;                     // offline: the child types one instead
    }
  }

  /** The current round's id as a string, from /join; null while the server is out of reach. */
  async function currentRound() {
    try {
      const response = await request('/join');
      const body = response.ok ? await response.json() : null;
      if (body && (typeof body.round === 'string' || typeof body.round === 'number')) return String(body.round);
    } catch (err) { /* offline: the caller keeps what it has */ }
    return null;
  }

  /** The best `limit` children and everyone tied with the last of them; throws with a sentence. */
  async function topPlayers(limit) {
    const response = await request('/players?limit=' + limit + '&ties=1');
    if (!response.ok) throw new Error(await errorText(response));
    const rows = await response.json();
    if (!Array.isArray(rows)) throw new Error('unexpected answer');
    return rows.filter(function (r) {
      return r && typeof r.name === 'string' && Number.isFinite(r.best) && Number.isInteger(r.rank);
    });
  }

  /** {name, score, seed, width, inputs} of a kept verified run, from GET /runs/<id>; throws a sentence. */
  async function recordedRun(id) {
    let response;
    try {
      response = await request('/runs/' + encodeURIComponent(id));
    } catch (err) {
      throw new Error('the server is out of reach');
    }
    if (!response.ok) throw new Error(await errorText(response));
    const body = await response.json().catch(function () { return null; });
    if (!body || typeof body.name !== 'string' || !Number.isInteger(body.score)) {
      throw new Error('the server did not send a run');
    }
    return body;
  }

  // =========================================================================
  // RunTickets: POST /runs hands out a single-use ticket {run, seed}. The page
  // keeps a small stock, so a world takes its seed from a ticket already here,
  // and a run started while the server restarts or the Wi-Fi drops for a
  // minute is still played on a ticket and verified when it is posted. With
  // none at hand the world plays on a local seed and is posted unverified.
  // =========================================================================

  const TICKET_STOCK = 3;                   // a few runs' worth of outage, and few unused tickets on the server
  const TICKET_FRESH_MS = 2 * 3600 * 1000;  // the server keeps a ticket 4 h: one taken within 2 h leaves
                                            // 2 h to post its run after a long outage
  const TICKET_RETRY_MAX_MS = 60 * 1000;    // a 429's Retry-After is waited out, up to this

  class RunTickets {
    constructor() {
      this.stock = [];                 // [{id, seed, fetchedAt}], oldest first
      this.asking = false;
      this.timer = null;
      this.onArrival = function () {};
      this.onCount = function () {};   // told how many tickets are in stock after each change
    }

    /** The oldest fresh ticket, handed out once, and the stock topped up; null if none is here. */
    take() {
      this.dropStale();
      const ticket = this.stock.shift() || null;
      this.onCount(this.stock.length);
      this.fill();
      return ticket;
    }

    /** A ticket taken for a world that was never played goes back to the front of the stock. */
    giveBack(ticket) {
      if (!ticket) return;
      this.stock.unshift(ticket);
      this.onCount(this.stock.length);
    }

    dropStale() {
      const now = Date.now();
      this.stock = this.stock.filter(function (t) { return now - t.fetchedAt < TICKET_FRESH_MS; });
    }

    /** Asks for tickets one at a time until the stock is full. Offline, the next take(), `online` or reconnect asks again. */
    async fill() {
      if (this.asking) return;
      this.asking = true;
      clearTimeout(this.timer);
      try {
        this.dropStale();
        while (this.stock.length < TICKET_STOCK && await this.askOne()) {
          this.onCount(this.stock.length);
          this.onArrival();
        }
      } finally {
        this.asking = false;
      }
    }

    /** One POST /runs; true when a ticket joined the stock. */
    async askOne() {
      let response;
      let body = null;
      try {
        response = await request('/runs', { method: 'POST' });
        body = response.status === 201 ? await response.json() : null;
      } catch (err) {
        return false;                  // unreachable, or not JSON: worlds play unverified until it answers
      }
      if (body && typeof body.run === 'string' && Number.isInteger(body.seed) && body.seed >= 0) {
        this.stock.push({ id: body.run, seed: body.seed >>> 0, fetchedAt: Date.now() });
        return true;
      }
      if (response.status === 429) {
        const delay = Math.min(TICKET_RETRY_MAX_MS, retryAfterMs(response, 1000));
        this.timer = setTimeout(() => { this.fill(); }, delay);
      }
      return false;
    }
  }

  // =========================================================================
  // ScoreQueue: every finished game goes to localStorage first, then to the
  // server, so no run is lost.
  //   - A run played on a ticket is kept with its ticket, seed, width and
  //     inputs, and is verified whenever it arrives.
  //   - A run with no name yet (none typed, or the page asking "Still
  //     <name>?"), or refused for its name, waits for one: nameGiven(name)
  //     sends every waiting run under it.
  //   - Retries back off 1, 2, 4, 8 s (or as long as a 429 asks), and go at
  //     once on `online` and when the live stream (re)opens.
  //   - Any other 4xx is final (a replay that does not hold up is a 422): the
  //     server's sentence is shown, and the run dropped.
  // =========================================================================

  const WAITING_RUNS_MAX = 30;   // runs waiting for a name: the best are kept, as the board keeps five a child

  let lastId = 0;
  function newId() { return Date.now().toString(36) + '-' + (++lastId) + '-' + Math.random().toString(36).slice(2, 8); }

  /**
   * A kept run as {id, name, score, at, run, width, inputs, seed}, run being the ticket id or
   * null for a plain post, name '' while it waits for one; null if it is not one. Entries from
   * before tickets ({name, score, at}) go as plain posts and are written back in this shape.
   */
  function keptScore(item) {
    if (!item || typeof item.name !== 'string' || !Number.isInteger(item.score)) return null;
    const at = Number.isFinite(item.at) ? item.at : 0;
    const kept = { id: typeof item.id === 'string' ? item.id : at + ':' + item.score + ':' + item.name,
      name: item.name, score: item.score, at: at, run: null };
    if (typeof item.run === 'string' && Number.isInteger(item.width) && Array.isArray(item.inputs)) {
      kept.run = item.run;
      kept.width = item.width;
      kept.inputs = item.inputs;
      if (Number.isInteger(item.seed)) kept.seed = item.seed;
    }
    return kept;
  }

  /** The POST body for a kept run: a verifiable run when it has a ticket, else the score alone. */
  function scoreBody(item) {
    if (!item.run) return { score: item.score };
    return { score: item.score, run: item.run, width: item.width, inputs: item.inputs };
  }

  /** True when the server says this name will not do from this device, or cannot say: the run waits. */
  async function nameRefused(name) {
    const answer = await checkName(name);
    return !answer || answer.error !== '';
  }

  class ScoreQueue {
    /**
     * options: {storageKey, retryMs: [ms...], show(text, bad), onSaved(name), onWaiting(count)}.
     * show gets what happened to the last runs sent; onWaiting the number of runs waiting for a name.
     */
    constructor(options) {
      this.storageKey = options.storageKey;
      this.retryMs = options.retryMs;
      this.show = options.show;
      this.onSaved = options.onSaved;
      this.onWaiting = options.onWaiting;
      this.flush = window.DinoLive.serial(() => this.sendPending());   // one send at a time
      this.failures = 0;
      this.timer = null;
      this.notes = [];
      this.memory = null;              // the queue itself while localStorage refuses to keep it
    }

    load() {
      if (this.memory) return this.memory.map(function (item) { return Object.assign({}, item); });
      let list;
      try { list = JSON.parse(store.get(this.storageKey) || '[]'); } catch (err) { list = []; }
      if (!Array.isArray(list)) return [];
      return list.map(keptScore).filter(Boolean);
    }

    save(list) {
      this.memory = store.set(this.storageKey, JSON.stringify(list)) ? null : list.slice();
      this.onWaiting(list.filter(function (item) { return !item.name; }).length);
    }

    /** How many runs wait for a name, told again to onWaiting. */
    showWaiting() { this.save(this.load()); }

    /**
     * Keeps a finished game under `name` ('' to wait for one), `played` being
     * {ticket, seed, width, inputs} for a run on a ticket, then sends it.
     */
    add(name, points, played) {
      const list = this.load();
      list.push(keptScore(Object.assign({ id: newId(), name: name, score: points, at: Date.now() },
        played ? { run: played.ticket, seed: played.seed, width: played.width, inputs: played.inputs } : {})));
      this.save(ScoreQueue.capWaiting(list));
      this.flush();
    }

    /** The child gave a name the server accepts: every run waiting for one goes under it. */
    nameGiven(name) {
      const list = this.load();
      const waiting = list.filter(function (item) { return !item.name; });
      if (!name || !waiting.length) return;
      for (const item of waiting) item.name = name;
      this.save(list);
      this.flush();
    }

    /** Drops the lowest waiting runs beyond WAITING_RUNS_MAX. */
    static capWaiting(list) {
      const waiting = list.filter(function (item) { return !item.name; });
      if (waiting.length <= WAITING_RUNS_MAX) return list;
      const dropped = new Set(waiting.sort(function (a, b) { return a.score - b.score; })
        .slice(0, waiting.length - WAITING_RUNS_MAX).map(function (item) { return item.id; }));
      return list.filter(function (item) { return !dropped.has(item.id); });
    }

    change(item, fields) {
      const list = this.load();
      const index = list.findIndex(function (x) { return x.id === item.id; });
      if (index < 0) return;
      if (fields === null) list.splice(index, 1);
      else Object.assign(list[index], fields);
      this.save(list);
    }

    named() { return this.load().filter(function (item) { return item.name; }); }

    report(text, bad) {
      this.notes.push(text);
      this.show(this.notes.slice(-2).join(' '), !!bad);
    }

    async sendPending() {
      clearTimeout(this.timer);
      this.timer = null;
      this.notes = [];                  // what happened to each run sent in this pass
      for (;;) {
        const item = this.named()[0];
        if (!item) break;
        let url;
        try { url = '/score/' + encodeURIComponent(item.name); } catch (err) {
          this.change(item, { name: '' });   // a lone surrogate cannot be sent: the run waits for another name
          this.report('Score ' + item.score + ' not saved: the name has a character that cannot be sent.', true);
          continue;
        }
        let response;
        try {
          response = await request(url, { method: 'POST', headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(scoreBody(item)) });
        } catch (err) {
          this.retryLater('Server unreachable: ' + plural(this.named().length, 'score') + ' will retry');
          return;
        }
        if (response.ok) {
          const answer = await response.json().catch(function () { return null; });
          this.change(item, null);
          this.failures = 0;
          const verified = !!(answer && answer.verified === true);
          this.report('Score ' + item.score + ' saved as ' + item.name + (verified ? ' \u2713 verified.' : ', unverified.'));
          this.onSaved(item.name);
          continue;
        }
        const message = await errorText(response);
        const status = response.status;
        // A refusal of the name (not of the run) keeps the run for the name the child gives next.
        if (NAME_REFUSALS.includes(status) && await nameRefused(item.name)) {
          this.change(item, { name: '' });
          this.report('Score ' + item.score + ' not saved: ' + message + '.', true);
          continue;
        }
        if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
          this.change(item, null);
          this.report('Score ' + item.score + ' not saved: ' + message + '.', true);
          continue;
        }
        const waitMs = status === 429 ? retryAfterMs(response, 0) : 0;
        this.retryLater('Server error (' + message + '): ' + plural(this.named().length, 'score') + ' will retry', waitMs);
        return;
      }
    }

    retryLater(text, atLeastMs) {
      this.report(text, true);
      const delays = this.retryMs;
      const delay = Math.max(atLeastMs || 0, delays[Math.min(this.failures, delays.length - 1)]);
      this.failures++;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => { this.flush(); }, delay);
    }
  }

  // =========================================================================
  // Races: the teacher starts one race for every open page. Its times are
  // the server's clock (epoch ms), so each page learns how far its own clock
  // is from the server's (RaceClock), joins during the countdown (joinRace)
  // and sends its run's key changes while it plays (RaceSender), so the
  // server replays every racer as they go.
  // =========================================================================

  const CLOCK_SAMPLES = 3;          // GET /races/current this many times; the quickest round trip wins

  /** A race object from the server, or null if the body is not one. */
  function raceOf(body) {
    if (!body || !Number.isInteger(body.id) || typeof body.state !== 'string' || !Number.isInteger(body.seed) ||
        !Number.isFinite(body.starts_at)) return null;
    if (!Array.isArray(body.racers)) body.racers = [];
    return body;
  }

  class RaceClock {
    constructor() {
      this.offset = 0;              // server clock minus this page's clock, in ms
      this.roundTrip = Infinity;    // of the sample the offset came from
      this.known = false;
    }

    /** The server's clock now, as well as this page knows it. */
    now() { return Date.now() + this.offset; }

    /**
     * The race in its countdown or running, and the clock with it: {race} (race null when none is
     * on), or null while the server is out of reach. GET /races says first whether one is on, as
     * /races/current answers 404 before the first race (an error in the browser's console on every
     * page load); then GET /races/current `samples` times (CLOCK_SAMPLES unless said) sets the
     * offset from the quickest answer so far.
     */
    async raceOn(samples) {
      let list = null;
      try {
        const response = await request('/races');
        list = response.ok ? await response.json() : null;
      } catch (err) {
        return null;
      }
      if (!Array.isArray(list)) return null;
      const newest = list[0];
      if (!newest || (newest.state !== 'countdown' && newest.state !== 'running')) return { race: null };
      return this.sync(samples);
    }

    /** GET /races/current `samples` times: {race} with the clock's offset from the quickest answer. */
    async sync(samples) {
      let found = null;
      let best = Infinity;
      let offset = 0;
      for (let i = 0; i < (samples || CLOCK_SAMPLES); i++) {
        const sent = Date.now();
        let response;
        let body = null;
        try {
          response = await request('/races/current');
          body = await response.json();
        } catch (err) {
          continue;                 // one lost sample; the others may answer
        }
        const received = Date.now();
        if (!body || !Number.isFinite(body.server_now)) {
          if (response.status === 404) found = found || { race: null };
          continue;
        }
        found = { race: raceOf(body) };
        if (received - sent < best) {
          best = received - sent;
          offset = body.server_now - (sent + received) / 2;
        }
      }
      if (best < this.roundTrip) {   // a slower answer says less about the clock than one kept already
        this.offset = offset;
        this.roundTrip = best;
        this.known = true;
      }
      return found;
    }
  }

  /** POST /races/<id>/join under `name`: {race} when in, else {error, status} with the server's sentence. */
  async function joinRace(id, name) {
    let response;
    try {
      response = await request('/races/' + encodeURIComponent(id) + '/join', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: name }) });
    } catch (err) {
      return { error: 'the server is out of reach', status: 0 };
    }
    if (!response.ok) return { error: await errorText(response), status: response.status };
    const race = raceOf(await response.json().catch(function () { return null; }));
    return race ? { race: race } : { error: 'the server did not send the race', status: response.status };
  }

  const RACE_SEND_MS = 250;         // a batch of key changes this often while the run goes on

  /**
   * RaceSender: one race run's key changes, posted to /races/<id>/inputs every
   * RACE_SEND_MS and at once on the crash. seq counts accepted batches only:
   * a POST that fails (Wi-Fi gone, server restarting) is sent again with
   * everything since the last accepted one, so a page that loses the network
   * keeps playing and sends the rest at once when it is back. A 409 (the
   * race is over, or the server will not take this run) stops it for good.
   *
   * options: {raceId, sim (the DinoSim state being played), firstTickAt (server ms),
   *           onAnswer({tick, distance, score, alive, late, place}), onStop(sentence)}.
   */
  class RaceSender {
    constructor(options) {
      this.raceId = options.raceId;
      this.sim = options.sim;
      this.firstTickAt = options.firstTickAt;
      this.onAnswer = options.onAnswer || function () {};
      this.onStop = options.onStop || function () {};
      this.seq = 0;                 // the next batch's number: accepted batches so far
      this.sentTick = 0;            // the tick the last accepted batch reached
      this.stopped = false;
      this.waitUntil = 0;           // a 429's Retry-After, as Date.now()
      this.send = window.DinoLive.serial(() => this.sendBatch());   // one POST at a time
      this.timer = setInterval(() => { this.send(); }, RACE_SEND_MS);
    }

    /** The keys changed since the last accepted batch, as DinoSim records them: [tick, jump, duck]. */
    batch() {
      const s = this.sim;
      const from = this.sentTick;
      const inputs = s.inputs.filter(function (entry) { return entry[0] >= from && entry[0] < s.ticks; })
        .map(function (entry) { return entry.slice(); });
      const body = { seq: this.seq, tick: s.ticks, inputs: inputs, crashed: s.crashed };
      if (this.seq === 0) body.first_tick_at = Math.round(this.firstTickAt);
      return body;
    }

    /** The run crashed: its last batch goes now, not at the next beat. */
    crashed() { this.send(); }

    stop(reason) {
      if (this.stopped) return;
      this.stopped = true;
      clearInterval(this.timer);
      if (reason) this.onStop(reason);
    }

    async sendBatch() {
      if (this.stopped || Date.now() < this.waitUntil) return;
      const body = this.batch();
      if (body.seq > 0 && body.tick === this.sentTick && !body.crashed) return;   // nothing new to say
      let response;
      try {
        response = await request('/races/' + encodeURIComponent(this.raceId) + '/inputs', {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      } catch (err) {
        return;                     // out of reach: the next beat sends this and what follows, same seq
      }
      if (response.ok) {
        this.seq++;
        this.sentTick = body.tick;
        const answer = await response.json().catch(function () { return null; });
        if (answer) this.onAnswer(answer);
        if (body.crashed) this.stop('');
        return;
      }
      if (response.status === 409) { this.stop(await errorText(response)); return; }
      if (response.status === 429) { this.waitUntil = Date.now() + retryAfterMs(response, RACE_SEND_MS); return; }
      if (response.status >= 400 && response.status < 500 && response.status !== 408) {
        this.stop(await errorText(response));   // a batch the server will never take: say so rather than loop
      }
      // 5xx and 408: the next beat tries again with everything since the last accepted batch
    }
  }

  window.DinoClient = Object.freeze({
    store: store,
    plural: plural,
    playerKey: playerKey,
    request: request,
    errorText: errorText,
    checkName: checkName,
    suggestName: suggestName,
    currentRound: currentRound,
    topPlayers: topPlayers,
    recordedRun: recordedRun,
    RunTickets: RunTickets,
    ScoreQueue: ScoreQueue,
    RaceClock: RaceClock,
    joinRace: joinRace,
    RaceSender: RaceSender,
  });
}());
