// Golden/candidate comparison in place: the golden is drawn over the candidate and clipped at
// the slider's position (left of the line: golden, right: candidate); "flip" shows either whole.
(function () {
  "use strict";
  function setSplit(figure, value) {
    var range = figure.querySelector("input[type=range]");
    var golden = figure.querySelector("img.gold");
    var divider = figure.querySelector(".divider");
    var output = figure.querySelector("[data-qg-showing]");
    value = Math.max(0, Math.min(100, Math.round(Number(value))));
    range.value = String(value);
    golden.style.clipPath = "inset(0 " + (100 - value) + "% 0 0)";
    divider.style.left = value + "%";
    var showing = value >= 100 ? "golden" : (value <= 0 ? "candidate" : "split");
    figure.setAttribute("data-showing", showing);
    output.textContent = showing === "split" ? "split at " + value + "%" : showing;
  }
  var figures = document.querySelectorAll("[data-qg-compare]");
  Array.prototype.forEach.call(figures, function (figure) {
    var range = figure.querySelector("input[type=range]");
    range.addEventListener("input", function () { setSplit(figure, range.value); });
    figure.querySelector("[data-qg-flip]").addEventListener("click", function () {
      setSplit(figure, figure.getAttribute("data-showing") === "golden" ? 0 : 100);
    });
    setSplit(figure, range.value);
  });
})();
// A clip's player: golden, candidate and difference are windows onto one contact sheet, moved to
// the same frame together; play steps through at the clip's fps; the curve's cursor follows.
(function () {
  "use strict";
  Array.prototype.forEach.call(document.querySelectorAll("[data-qg-clip]"), function (clip) {
    var frames = Number(clip.getAttribute("data-frames"));
    var step = Number(clip.getAttribute("data-step"));
    var fps = Number(clip.getAttribute("data-fps")) || 8;
    var range = clip.querySelector("input[type=range]");
    var output = clip.querySelector("[data-qg-frame]");
    var cursor = clip.querySelector("line.cursor");
    var xs = cursor ? cursor.getAttribute("data-xs").split(" ").map(Number) : [];
    var play = clip.querySelector("[data-qg-play]");
    var timer = null;
    function show(frame) {
      frame = ((Math.round(Number(frame)) % frames) + frames) % frames;
      range.value = String(frame);
      Array.prototype.forEach.call(clip.querySelectorAll(".clip-window"), function (w) {
        w.style.backgroundPosition = "-" + (frame * step) + "px -" + w.getAttribute("data-y") + "px";
        w.setAttribute("data-frame", String(frame));
      });
      output.textContent = "frame " + (frame + 1) + " of " + frames;
      if (cursor && xs.length === frames) { cursor.setAttribute("x1", xs[frame]); cursor.setAttribute("x2", xs[frame]); }
    }
    function stop() { if (timer !== null) { clearInterval(timer); timer = null; } play.textContent = "play"; }
    range.addEventListener("input", function () { stop(); show(range.value); });
    clip.querySelector("[data-qg-worst]").addEventListener("click", function () {
      stop(); show(clip.getAttribute("data-worst"));
    });
    play.addEventListener("click", function () {
      if (timer !== null) { stop(); return; }
      play.textContent = "pause";
      timer = setInterval(function () { show(Number(range.value) + 1); }, 1000 / fps);
    });
    show(range.value);
  });
})();
