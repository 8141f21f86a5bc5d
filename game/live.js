// DinoLive: the one live-update client every page uses (the game, the player
// page, the projector board), so they all follow the same reconnect policy.
//
//   const live = window.DinoLive.connect({onChange, onState});
//   live.close();
//
// onChange() runs on each `event: scores` from /events and on every poll tick
// while the stream is down; onState(true|false) runs when the stream opens or
// drops (false at once when the browser has no EventSource). Both are optional.
(function () {
  'use strict';

  const POLL_MS = 2000;       // while the stream is down, ask the page to refresh this often
  const REOPEN_MS = 3000;     // a stream the browser gave up on (e.g. a 503) is reopened after this;
                              // the same as the server's `retry:`, so every drop is retried alike

  function connect(options) {
    const onChange = (options && options.onChange) || function () {};
    const onState = (options && options.onState) || function () {};
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
      try { stream = new EventSource('/events'); } catch (err) {
        dropped();
        reopenLater();
        return;
      }
      source = stream;
      stream.addEventListener('open', function () {
        stopPolling();
        setLive(true);
      });
      stream.addEventListener('scores', function () { onChange(); });
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

  window.DinoLive = Object.freeze({ connect: connect });
}());
