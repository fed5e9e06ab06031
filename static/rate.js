/* The rating page: shows the current pair, takes one answer per criterion, submits them all at
 * once through the JSON API and shows the next pair, whose clips were prefetched meanwhile.
 *
 * - Both clips are fetched as blobs and decoded before either is revealed, then put on the page in
 *   the same animation frame, so they start together (a slow clip is never seen later).
 * - "Replay both" (R) makes fresh object URLs from the same blobs: a new URL restarts a GIF.
 * - Requests: the page arrives with its first pair in its config (`first`: the server's join
 *   assigned it and the one after it, and the page embeds what GET next would answer), so
 *   arriving costs no API request; each answer is one request, whose response carries the next
 *   pair and the one after it; the last pair's answer carries `done` and the completion code,
 *   shown in place (the done page's address replaces this one's) without asking again.
 * - The next pair is assigned once, ahead of time, and its clips are downloaded while this pair
 *   is rated: the first pair's answer and a submit's carry it (`after`). When one has none it is
 *   asked for with GET next?after=<id> (which returns the same trial when asked again), unless
 *   the pair is the last (`last`): then nothing follows it and nothing is asked.
 * - Keys: 1/2/3 answer the focused (or first unanswered) question, Enter submits, R replays.
 * - While the study's next pair is still being rendered (`waiting`), the page keeps the evaluator
 *   and asks again by itself after the server's `retry_after`, backing off while nothing changes.
 * - Timing on the page's monotonic clock goes with each answer: from receiving the pair as the
 *   current one to both clips on screen (load), and from then to the answer (view). The server
 *   judges the minimum viewing time and fast answers by it, not by its own queue-laden clock.
 * - What the page saw goes with each answer too (`watch`): how long each clip was on screen (at
 *   least half of it in the viewport, IntersectionObserver) with the tab visible, from both
 *   clips revealed to the answer, and how long the tab was hidden (visibilitychange) from
 *   receiving the pair to the answer. A GIF cannot say when it loops: the server divides the
 *   on-screen time by each clip's loop duration, which the page is never told.
 * - A study with a completion URL sends the finished evaluator there (the done card shows the
 *   code and a link meanwhile, and stays if the browser does not go).
 * No build step, no dependencies.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("rate-config").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var form = $("votes");
  var stage = $("stage");
  var stageStatus = $("stage-status");
  var images = { left: $("clip-left"), right: $("clip-right") };
  var promptEl = $("prompt");
  var messageEl = $("form-message");
  var timerEl = $("timer");
  var submitButton = $("submit");
  var fieldsets = Array.prototype.slice.call(form.querySelectorAll("fieldset.criterion"));
  var KEYS = { "1": "left", "2": "tie", "3": "right" };
  var RETRY_MS = 15000;   // when nothing is ready and nothing is coming (no retry_after given)
  var WAIT_MAX_MS = 30000; // the longest a waiting page goes without asking again

  var current = null;     // { trial, blobs }
  var objectUrls = [];    // the URLs the two <img> show now
  var receivedAt = 0;     // performance.now() when the pair arrived as the current one
  var revealedAt = 0;     // performance.now() when both clips appeared
  var waits = 0;          // `waiting` answers in a row (for the back-off)
  var busy = false;       // a submit or a reveal is in progress
  var prefetch = null;    // { after, promise -> { trial, blobs: Promise } | null }
  var timer = null;
  var finished = false;   // the done card is shown: keys do nothing any more

  /* What the page saw of the current pair: milliseconds each clip was on screen with the tab
   * visible (after both were revealed) and the tab was hidden (since the pair arrived). Time is
   * added up to each change (`account`), under the state before it. */
  var ON_SCREEN = 0.5;    // the share of a clip that must be in the viewport
  var watch = null;       // { left, right, hidden, at, revealed }
  var inView = { left: false, right: false };
  var tabVisible = document.visibilityState !== "hidden";

  function account() {
    if (!watch) return;
    var now = performance.now();
    var elapsed = now - watch.at;
    watch.at = now;
    if (!tabVisible) {
      watch.hidden += elapsed;
    } else if (watch.revealed) {
      if (inView.left) watch.left += elapsed;
      if (inView.right) watch.right += elapsed;
    }
  }

  function startWatch() {
    watch = { left: 0, right: 0, hidden: 0, at: performance.now(), revealed: false };
  }

  function revealWatch() {
    account();
    if (watch) watch.revealed = true;
  }

  function watchReport() {
    account();
    return {
      left_seconds: watch.left / 1000,
      right_seconds: watch.right / 1000,
      hidden_seconds: watch.hidden / 1000
    };
  }

  document.addEventListener("visibilitychange", function () {
    account();
    tabVisible = document.visibilityState !== "hidden";
  });
  if ("IntersectionObserver" in window) {
    var observer = new IntersectionObserver(function (entries) {
      account();
      entries.forEach(function (entry) {
        var side = entry.target === images.left ? "left" : "right";
        inView[side] = entry.isIntersecting && entry.intersectionRatio >= ON_SCREEN - 0.001;
      });
    }, { threshold: [0, ON_SCREEN, 1] });
    observer.observe(images.left);
    observer.observe(images.right);
  } else {
    inView.left = inView.right = true;  // no observer: on screen whenever the tab is visible
  }

  function ApiError(status, body) {
    var detail = body && body.detail;
    this.status = status;
    this.code = detail && detail.code;
    this.message = (detail && detail.message) || (typeof detail === "string" ? detail : "HTTP " + status);
  }

  /* A busy server (503) says when to come back (Retry-After): wait that long and ask again, a
   * few times. Safe for submits too: the same answer twice is stored once. */
  var BUSY_RETRIES = 5;

  function api(url, options, attempt) {
    options = options || {};
    attempt = attempt || 0;
    var headers = { Accept: "application/json" };
    if (options.body) headers["Content-Type"] = "application/json";
    return fetch(url, {
      method: options.method || "GET",
      credentials: "same-origin",
      headers: headers,
      body: options.body
    }).then(function (response) {
      if (response.status === 503 && attempt < BUSY_RETRIES) {
        var seconds = parseFloat(response.headers.get("Retry-After")) || 1;
        return new Promise(function (resolve) {
          setTimeout(resolve, seconds * 1000 * (1 + Math.random()));
        }).then(function () { return api(url, options, attempt + 1); });
      }
      return response.json().catch(function () { return null; }).then(function (body) {
        if (!response.ok) throw new ApiError(response.status, body);
        return body;
      });
    });
  }

  function fetchBlob(url, attempt) {
    attempt = attempt || 0;
    return fetch(url, { credentials: "same-origin" }).then(function (response) {
      if (response.status === 503 && attempt < BUSY_RETRIES) {
        var seconds = parseFloat(response.headers.get("Retry-After")) || 1;
        return new Promise(function (resolve) {
          setTimeout(resolve, seconds * 1000 * (1 + Math.random()));
        }).then(function () { return fetchBlob(url, attempt + 1); });
      }
      if (!response.ok) throw new ApiError(response.status, null);
      return response.blob();
    });
  }

  function loadPair(trial) {
    return Promise.all([fetchBlob(trial.left.url), fetchBlob(trial.right.url)]).then(function (b) {
      return { left: b[0], right: b[1] };
    });
  }

  function decoded(url) {
    var img = new Image();
    img.src = url;
    var loaded = new Promise(function (resolve, reject) {
      img.onload = resolve;
      img.onerror = function () { reject(new Error("a clip could not be decoded")); };
    });
    return img.decode ? img.decode().catch(function () { return loaded; }) : loaded;
  }

  function nextFrame() {
    return new Promise(function (resolve) { requestAnimationFrame(function () { resolve(); }); });
  }

  /* Fresh object URLs for both clips, decoded, then swapped in together: both start at frame 1. */
  function play(blobs) {
    var urls = [URL.createObjectURL(blobs.left), URL.createObjectURL(blobs.right)];
    return Promise.all(urls.map(decoded)).then(nextFrame).then(function () {
      images.left.src = urls[0];
      images.right.src = urls[1];
      var old = objectUrls;
      objectUrls = urls;
      setTimeout(function () { old.forEach(function (u) { URL.revokeObjectURL(u); }); }, 2000);
    });
  }

  function setLoading(loading, text) {
    stage.classList.toggle("is-loading", loading);
    stage.setAttribute("aria-busy", loading ? "true" : "false");
    stageStatus.textContent = loading ? (text || "Loading both clips…") : "Both clips are playing.";
  }

  function say(text, missing) {
    messageEl.textContent = text || "";
    if (missing) messageEl.dataset.missing = "1";
    else delete messageEl.dataset.missing;
  }

  function setProgress(progress) {
    var n = Math.min(progress.answered + 1, Math.max(progress.total, 1));
    $("progress-n").textContent = n;
    $("progress-total").textContent = progress.total;
    $("progress-fill").style.width = (100 * progress.answered / Math.max(progress.total, 1)) + "%";
    document.title = "Pair " + n + " of " + progress.total + " · Video comparison";
  }

  function resetForm() {
    form.reset();
    fieldsets.forEach(function (fs) { fs.removeAttribute("aria-invalid"); fs.classList.remove("missing"); });
    say("");
  }

  /* A label in running text, isolated (U+2068 ... U+2069) so its direction cannot spill over. */
  function isolate(text) {
    return "\u2068" + text + "\u2069";
  }

  function radioToFocus(fieldset) {
    return fieldset.querySelector("input:checked") || fieldset.querySelector("input");
  }

  function focusFieldset(fieldset) {
    if (fieldset) radioToFocus(fieldset).focus();
    else submitButton.focus();
  }

  function startTimer() {
    clearInterval(timer);
    var minMs = (config.minViewSeconds || 0) * 1000;
    function tick() {
      var left = minMs - (performance.now() - revealedAt);
      if (left <= 0) {
        timerEl.textContent = "";
        submitButton.removeAttribute("aria-disabled");
        clearInterval(timer);
      } else {
        timerEl.textContent = "You can submit in " + Math.ceil(left / 1000) + " s";
        submitButton.setAttribute("aria-disabled", "true");
      }
    }
    tick();
    if (minMs > 0) timer = setInterval(tick, 250);
  }

  function preload(trial) {
    var blobs = loadPair(trial);
    blobs.catch(function () {});
    return { trial: trial, blobs: blobs };
  }

  /* The pair after `afterId`: given (a submit's answer carries it) or asked for. */
  function startPrefetch(afterId, given) {
    var promise = given ? Promise.resolve(preload(given)) :
      api(config.next + "?after=" + encodeURIComponent(afterId)).then(function (result) {
        return result.status === "trial" ? preload(result.trial) : null;
      });
    promise.catch(function () {});
    prefetch = { after: afterId, promise: promise };
  }

  function prefetched(trial) {
    if (!prefetch) return Promise.resolve(null);
    return prefetch.promise.then(function (p) {
      return p && p.trial.id === trial.id ? p.blobs : null;
    }).catch(function () { return null; });
  }

  /* Ask again later: after the server's hint, doubled while nothing changes, with jitter so
   * that many waiting pages do not ask at the same moment. */
  function askAgain(result) {
    var ms = RETRY_MS;
    if (result.status === "waiting" && result.retry_after) {
      ms = Math.min(result.retry_after * 1000 * Math.pow(1.5, waits), WAIT_MAX_MS);
      waits += 1;
    }
    setTimeout(function () { api(config.next).then(show).catch(fail); }, ms * (0.8 + 0.4 * Math.random()));
  }

  /* The done page's card, filled from the answer that says `done`, in place of the rating
   * page; the address becomes the done page's, so a reload shows the server's own. */
  function showDone(result) {
    var card = $("done-template").content.cloneNode(true);
    var answered = result.progress.answered;
    card.getElementById("done-answered").textContent = answered + " pair" + (answered === 1 ? "" : "s");
    if (result.completion_code) {
      card.getElementById("completion-code").firstElementChild.textContent = result.completion_code;
      card.getElementById("done-code").hidden = false;
    }
    if (result.completion_url) {
      card.getElementById("completion-link").href = result.completion_url;
      card.getElementById("done-return").hidden = false;
      card.getElementById("done-close").hidden = true;
    }
    finished = true;
    clearInterval(timer);
    objectUrls.forEach(function (u) { URL.revokeObjectURL(u); });
    objectUrls = [];
    current = null;
    var main = $("main");
    main.replaceChildren(card);
    document.body.classList.add("narrow");
    document.title = "Thank you · Video comparison";
    history.replaceState(null, "", config.done);
    $("done-title").focus();
    watch = null;
    // Back to the recruiting platform with the code; the card stays should the browser not go.
    if (result.completion_url) window.location.replace(result.completion_url);
  }

  /* Show a `next` answer of the API: a trial, the done card, or a wait message. */
  function show(result) {
    if (result.status === "done") {
      showDone(result);
      return Promise.resolve();
    }
    setProgress(result.progress);
    if (result.status !== "trial") {
      current = null;
      resetForm();  // the last pair's answers are not this one's
      promptEl.textContent = "…";
      stage.classList.toggle("is-waiting", result.status === "waiting");
      setLoading(true, result.status === "waiting" ? result.message :
        (result.message || "No pairs are ready yet.") + " This page checks again by itself.");
      askAgain(result);
      return Promise.resolve();
    }
    waits = 0;
    stage.classList.remove("is-waiting");
    receivedAt = performance.now();
    startWatch();
    var trial = result.trial;
    current = null;
    setLoading(true);
    resetForm();
    promptEl.textContent = trial.prompt;
    return prefetched(trial).then(function (blobs) {
      return blobs || loadPair(trial);
    }).then(function (blobs) {
      current = { trial: trial, blobs: blobs };
      return play(blobs);
    }).then(function () {
      setLoading(false);
      revealedAt = performance.now();
      revealWatch();
      startTimer();
      window.scrollTo(0, 0);
      focusFieldset(fieldsets[0]);
      if (result.last) prefetch = null;  // nothing follows: nothing to ask
      else startPrefetch(trial.id, result.after);
    });
  }

  function fail(error) {
    setLoading(true, "Something went wrong: " + (error.message || error) + " Reload the page to try again; your answers so far are saved.");
  }

  function answers() {
    var votes = {};
    var missing = [];
    fieldsets.forEach(function (fs) {
      var checked = fs.querySelector("input:checked");
      if (checked) {
        votes[fs.dataset.key] = checked.value;
        fs.removeAttribute("aria-invalid");
        fs.classList.remove("missing");
      } else {
        missing.push(fs);
        fs.setAttribute("aria-invalid", "true");
        fs.classList.add("missing");
      }
    });
    return { votes: votes, missing: missing };
  }

  function submit() {
    if (busy || !current) return;
    var collected = answers();
    if (collected.missing.length) {
      var names = collected.missing.map(function (fs) {
        return isolate(fs.querySelector(".criterion-label").textContent);
      });
      say("Please answer every question. Still open: " + names.join(", ") + ".", true);
      focusFieldset(collected.missing[0]);
      return;
    }
    var wait = (config.minViewSeconds || 0) * 1000 - (performance.now() - revealedAt);
    if (wait > 0) {
      say("Please keep watching for " + Math.ceil(wait / 1000) + " more second(s), then submit.");
      return;
    }
    busy = true;
    submitButton.setAttribute("aria-busy", "true");
    say("");
    var trialId = current.trial.id;
    var now = performance.now();
    var timing = {
      load_seconds: Math.max(0, (revealedAt - receivedAt) / 1000),
      view_seconds: Math.max(0, (now - revealedAt) / 1000)
    };
    api(config.votes.replace("{id}", trialId), {
      method: "POST",
      body: JSON.stringify({ votes: collected.votes, timing: timing, watch: watchReport() })
    }).then(function (response) {
      return show(response.next);
    }).catch(function (error) {
      if (error.code === "already_answered" || error.code === "not_current") {
        say(error.message);
        return api(config.next).then(show);
      }
      if (error.code === "too_early") {
        say(error.message);
        return null;
      }
      say("Your answers were not saved: " + error.message + " Press Enter to try again.");
      return null;
    }).catch(fail).then(function () {
      busy = false;
      submitButton.removeAttribute("aria-busy");
    });
  }

  function replay() {
    if (!current || busy || stage.classList.contains("is-loading")) return;
    play(current.blobs).catch(fail);
  }

  /* While the "please answer every question" message shows, keep it true as answers come in. */
  function refreshMissing() {
    if (!messageEl.dataset.missing) return;
    var open = fieldsets.filter(function (fs) { return !fs.querySelector("input:checked"); });
    if (!open.length) {
      say("");
      return;
    }
    var names = open.map(function (fs) { return isolate(fs.querySelector(".criterion-label").textContent); });
    messageEl.textContent = "Please answer every question. Still open: " + names.join(", ") + ".";
  }

  function choose(value, target) {
    var fieldset = target && target.closest ? target.closest("fieldset.criterion") : null;
    if (!fieldset) {
      fieldset = fieldsets.filter(function (fs) { return !fs.querySelector("input:checked"); })[0];
    }
    if (!fieldset) return;
    var input = fieldset.querySelector('input[value="' + value + '"]');
    input.checked = true;
    fieldset.removeAttribute("aria-invalid");
    fieldset.classList.remove("missing");
    refreshMissing();
    var index = fieldsets.indexOf(fieldset);
    focusFieldset(fieldsets[index + 1]);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    submit();
  });
  form.addEventListener("change", function (event) {
    var fieldset = event.target.closest("fieldset.criterion");
    if (fieldset) {
      fieldset.removeAttribute("aria-invalid");
      fieldset.classList.remove("missing");
      refreshMissing();
    }
  });
  $("replay").addEventListener("click", replay);

  document.addEventListener("keydown", function (event) {
    if (finished || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    var target = event.target;
    var tag = target && target.tagName;
    if (tag === "TEXTAREA" || (tag === "INPUT" && !/^(radio|checkbox)$/.test(target.type))) return;
    var key = event.key;
    if (KEYS[key]) {
      event.preventDefault();
      choose(KEYS[key], target);
    } else if (key === "r" || key === "R") {
      event.preventDefault();
      replay();
    } else if (key === "Enter") {
      if (tag === "BUTTON" || tag === "A" || tag === "SUMMARY") return; // their own action
      event.preventDefault();
      submit();
    }
  });

  // The first pair came with the page; without it (an older page), ask.
  (config.first ? show(config.first) : api(config.next).then(show)).catch(fail);
})();
