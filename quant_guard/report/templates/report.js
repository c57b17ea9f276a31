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
