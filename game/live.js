// DinoLive: the one live-update client every page uses (the game, the player
// page, the projector board, the bots page, the teacher's console), so they all
// follow the same reconnect policy, refresh alike and say the same things.
//
//   const live = window.DinoLive.connect({onChange, onState, onRace, onRaceInputs, inputs});
//   live.close();
//   const refresh = window.DinoLive.serial(async () => { ... });
//   window.DinoLive.showStatus(el, {reachable, streamOpen, polls});
//   row.append(window.DinoLive.verifiedMark(), window.DinoLive.watchLink(name, runId));
//
// onChange(data) runs on each `event: scores` from /events, with the event's
// data ({version, players}: the class's top 10 with ties, so a page need not ask
// for it again), and with no data on every poll tick while the stream is down.
// onState(true|false) runs when the stream opens or drops (false at once when
// the browser has no EventSource). onRace(race) runs on each `event: race` (see
// GET /races/current); with `inputs: true` the stream also carries every
// racer's key changes, to onRaceInputs(batch) (the board's ghosts). All optional.
(function () {
  'use strict';

  const POLL_MS = 2000;       // while the stream is down, ask the page to refresh this often
  const REOPEN_MS = 3000;     // a stream the browser gave up on (e.g. a 503) is reopened after this;
                              // the same as the server's `retry:`, so every drop is retried alike

  function connect(options) {
    const onChange = (options && options.onChange) || function () {};
    const onState = (options && options.onState) || function () {};
    const onRace = (options && options.onRace) || function () {};
    const onRaceInputs = (options && options.onRaceInputs) || function () {};
    const url = options && options.inputs ? '/events?inputs=1' : '/events';
    let source = null;
    let poller = null;
    let reopenTimer = null;
    let live = null;          // null until the first open or drop, so the first one is always told
    let closed = false;

    function setLive(on) {
      if (live === on) return;
      live = on;
      onState(on);
    }

    function startPolling() {
      if (!poller) poller = setInterval(function () { onChange(); }, POLL_MS);
    }

    function stopPolling() {
      clearInterval(poller);
      poller = null;
    }

    function reopenLater() {
      clearTimeout(reopenTimer);
      reopenTimer = setTimeout(open, REOPEN_MS);
    }

    function dropped() {
      setLive(false);
      startPolling();
    }

    function open() {
      reopenTimer = null;
      if (closed) return;
      if (typeof window.EventSource !== 'function') {
        dropped();             // an old browser: polling is all there is
        return;
      }
      let stream;
      try { stream = new EventSource(url); } catch (err) {
        dropped();
        reopenLater();
        return;
      }
      source = stream;
      stream.addEventListener('open', function () {
        stopPolling();
        setLive(true);
      });
      stream.addEventListener('scores', function (event) { onChange(parsed(event)); });
      stream.addEventListener('race', function (event) {
        const race = parsed(event);
        if (race) onRace(race);
      });
      stream.addEventListener('race-inputs', function (event) {
        const batch = parsed(event);
        if (batch) onRaceInputs(batch);
      });
      stream.addEventListener('error', function () {
        dropped();
        // CONNECTING: the browser retries by itself. CLOSED: it gave up, so we retry.
        if (stream.readyState === EventSource.CLOSED && source === stream) {
          source = null;
          reopenLater();
        }
      });
    }

    function shut() {
      if (source) source.close();
      source = null;
      stopPolling();
      clearTimeout(reopenTimer);
      reopenTimer = null;
    }

    function onPageHide() { shut(); }

    // A page restored from the back/forward cache had its stream closed on the way out.
    function onPageShow(event) {
      if (event.persisted && !closed && !source && !reopenTimer) {
        live = null;
        open();
      }
    }

    window.addEventListener('pagehide', onPageHide);
    window.addEventListener('pageshow', onPageShow);
    open();

    return {
      close: function () {
        closed = true;
        shut();
        window.removeEventListener('pagehide', onPageHide);
        window.removeEventListener('pageshow', onPageShow);
      },
    };
  }

  /** An event's JSON data, or undefined for an event without any (an older server). */
  function parsed(event) {
    try { return event.data ? JSON.parse(event.data) : undefined; } catch (err) { return undefined; }
  }

  // ---- refreshing --------------------------------------------------------

  /** Wraps an async task so it runs one at a time; calls that arrive meanwhile make one more run. */
  function serial(task) {
    let busy = false;
    let again = false;
    return async function run() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        await task();
      } finally {
        busy = false;
        if (again) { again = false; run(); }
      }
    };
  }

  /**
   * Shows on `el` whether the page is up to date: {reachable, streamOpen, polls}, where `polls`
   * means the page asks on its own timer too, so it stays current while the stream is down.
   */
  function showStatus(el, state) {
    const on = state.reachable && (state.streamOpen || Boolean(state.polls));
    el.dataset.live = on ? 'on' : 'off';
    el.textContent = !state.reachable ? 'Cannot reach the server, retrying\u2026'
      : state.streamOpen ? 'Live'
      : state.polls ? 'Refreshing every few seconds' : 'Reconnecting\u2026';
  }

  // ---- verified runs ------------------------------------------------------

  const VERIFIED_TITLE = 'Verified: the server replayed this run and got the same score';

  /** True when a row ({verified, run}) is a kept run the server replayed, so it can be watched. */
  function isVerified(row) {
    return row.verified === true && typeof row.run === 'string';
  }

  function textSpan(className, text) {
    const span = document.createElement('span');
    if (className) span.className = className;
    span.textContent = text;
    return span;
  }

  /** The ✓ for a verified run, with its meaning as a tooltip and for screen readers. */
  function verifiedMark(extraClass) {
    const mark = textSpan('verified' + (extraClass ? ' ' + extraClass : ''), '\u2713');
    mark.title = VERIFIED_TITLE;
    mark.append(textSpan('sr-only', ' verified'));
    return mark;
  }

  /** A link that plays a kept run back in the game. */
  function watchLink(name, runId) {
    const link = document.createElement('a');
    link.className = 'watch';
    link.href = '/?watch=' + encodeURIComponent(runId);
    link.textContent = 'watch';
    link.setAttribute('aria-label', 'Watch ' + name + '\u2019s run');
    return link;
  }

  window.DinoLive = Object.freeze({
    connect: connect,
    serial: serial,
    showStatus: showStatus,
    isVerified: isVerified,
    verifiedMark: verifiedMark,
    watchLink: watchLink,
  });
}());
