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
  });
}());
