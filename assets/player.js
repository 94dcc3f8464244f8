(() => {
  // The run player (studio/ui/player.py writes the feed it plays): the hidden #player-feed holds one element
  // per step with its x_t and x̂0 as data URLs; this plays them at the chosen pace, while the run computes
  // and after, however fast it computed. Also: classroom mode from ?classroom=1.
  if (window.studioPlayer) return;
  const P = { frames: [], run: "", total: 0, idx: 0, playing: false, timer: null, seen: 0 };
  window.studioPlayer = P;
  const $ = (id) => document.getElementById(id);

  function runState() {
    const bar = document.querySelector("#progress .studio-progress");
    return bar ? bar.dataset.state : "idle";
  }

  function readFeed() {
    const feed = document.querySelector("#player-feed .studio-feed");
    if (!feed) return;
    const items = feed.querySelectorAll(".studio-frame");
    const run = feed.dataset.run || "";
    if (run === P.run && items.length === P.seen) return;
    if (run !== P.run) {  // a new run: start from its first step and play it
      P.run = run; P.idx = 0; P.playing = run !== "";
    }
    P.seen = items.length;
    P.total = Number(feed.dataset.total || 0);
    P.label = feed.dataset.label || "";
    P.frames = Array.from(items, (el) => ({
      k: Number(el.dataset.k), K: Number(el.dataset.total), t: el.dataset.t, ab: el.dataset.ab,
      scale: Number(el.dataset.scale || 1), xt: el.dataset.xt, x0: el.dataset.x0,
    }));
    if (P.idx >= P.frames.length) P.idx = Math.max(0, P.frames.length - 1);
    show();
    if (!P.timer) schedule();  // new frames never postpone the next tick: the pace stays the chosen one
  }

  function show() {
    const root = $("player-root");
    if (!root) return;
    const f = P.frames[P.idx];
    const play = $("player-play"), range = $("player-step"), label = $("player-label");
    root.dataset.playing = P.playing ? "1" : "0";
    if (play) { play.textContent = P.playing ? "❚❚ Pause" : "▶ Play"; play.setAttribute("aria-label", P.playing ? "pause" : "play"); }
    if (!f) return;
    if (range) { range.max = String(Math.max(1, P.frames.length)); range.value = String(P.idx + 1); }
    if (label) {
      label.dataset.k = String(f.k);
      label.dataset.total = String(f.K);
      const state = runState();
      const more = lastK() >= f.K ? "" : state === "cancelled"
        ? ` · the run was cancelled at step ${lastK()} of ${f.K}`
        : ` · ${lastK()} of ${f.K} steps computed so far`;
      label.textContent = `step ${f.k}/${f.K} · t = ${f.t} · ā = ${f.ab}${more}${P.label ? " · " + P.label : ""}`;
    }
    const big = document.body.classList.contains("studio-classroom") ? 1.5 : 1;
    for (const [id, src] of [["live-xt", f.xt], ["live-x0", f.x0]]) {
      const img = document.querySelector(`#${id} img`);
      if (!img) continue;
      if (img.getAttribute("src") !== src) {
        img.onload = () => { img.style.width = `${Math.round(img.naturalWidth * f.scale * big)}px`; };
        img.setAttribute("src", src);
      } else if (img.naturalWidth) {
        img.style.width = `${Math.round(img.naturalWidth * f.scale * big)}px`;
      }
    }
  }

  function lastK() {
    return P.frames.length ? P.frames[P.frames.length - 1].k : 0;
  }

  function speed() {
    const s = $("player-speed");
    return Math.max(0.1, Number(s ? s.value : 8));
  }

  function schedule() {
    clearTimeout(P.timer);
    P.timer = null;
    if (!P.playing) return;
    P.timer = setTimeout(tick, 1000 / speed());
  }

  function tick() {
    P.timer = null;
    if (!P.playing) return;
    if (P.idx < P.frames.length - 1) {
      P.idx += 1;
      show();
    } else if (lastK() >= P.total || ["cancelled", "error", "idle"].includes(runState())) {
      P.playing = false;  // the end of the run (or of what a stopped run computed); "done" waits for its last frames
      show();
      return;
    }
    schedule();
  }

  document.addEventListener("click", (e) => {
    if (!e.target.closest || !e.target.closest("#player-play")) return;
    if (!P.playing && P.idx >= P.frames.length - 1 && lastK() >= P.total) P.idx = 0;  // play again from the start
    P.playing = !P.playing && P.frames.length > 0;
    show();
    schedule();
  });
  document.addEventListener("input", (e) => {
    if (e.target && e.target.id === "player-step") {
      P.idx = Math.min(Math.max(0, Number(e.target.value) - 1), P.frames.length - 1);
      P.playing = false;
      show();
      schedule();
    }
  });
  document.addEventListener("change", (e) => {
    if (e.target && e.target.id === "player-speed") schedule();
  });
  new MutationObserver(readFeed).observe(document.body, { childList: true, subtree: true });

  // classroom mode: ?classroom=1 in the address, or the toggle (#classroom input)
  const wanted = new URLSearchParams(window.location.search).get("classroom");
  const setClassroom = (on) => { document.body.classList.toggle("studio-classroom", on); show(); };
  if (wanted === "1" || wanted === "true") setClassroom(true);
  document.addEventListener("change", (e) => {
    if (e.target && e.target.closest && e.target.closest("#classroom")) setClassroom(e.target.checked);
  });
  const syncToggle = () => {
    const box = document.querySelector("#classroom input[type=checkbox]");
    if (box && document.body.classList.contains("studio-classroom") && !box.checked) box.click();
    else if (!box) setTimeout(syncToggle, 200);
  };
  syncToggle();
})();
