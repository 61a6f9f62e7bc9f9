// Cairn web view: the only script. Everything works without it except live updates.
// - "Load more" links fetch the next part of an artifact and append it in place.
// - A running session's page follows its event stream (EventSource; the login cookie
//   authenticates it, the token is never in a URL).
// It never builds HTML from strings: every text goes through textContent.
(function () {
  "use strict";

  function loadMore(link) {
    var holder = link.closest("[data-more]");
    link.setAttribute("aria-busy", "true");
    fetch(link.href, { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var incoming = doc.querySelector("[data-chunk]");
        var target = document.querySelector("[data-chunk]");
        if (!incoming || !target) { window.location.href = link.href; return; }
        while (incoming.firstElementChild) { target.appendChild(document.adoptNode(incoming.firstElementChild)); }
        var range = doc.getElementById("range");
        var here = document.getElementById("range");
        if (range && here) { here.textContent = "Shown up to: " + range.textContent; }
        var next = doc.querySelector("[data-more]");
        if (next) { holder.replaceWith(document.adoptNode(next)); } else { holder.remove(); }
      })
      .catch(function (e) {
        link.removeAttribute("aria-busy");
        link.textContent = "Loading failed (" + e.message + "); follow this link instead";
        link.classList.remove("load-more");
      });
  }

  document.addEventListener("click", function (ev) {
    var link = ev.target.closest && ev.target.closest("a.load-more");
    if (!link || ev.ctrlKey || ev.metaKey || ev.shiftKey) { return; }
    ev.preventDefault();
    loadMore(link);
  });

  function li(parts) {
    var item = document.createElement("li");
    parts.forEach(function (p) {
      if (typeof p === "string") { item.appendChild(document.createTextNode(p)); return; }
      var a = document.createElement("a");
      a.href = p.href;
      a.textContent = p.text;
      item.appendChild(a);
    });
    return item;
  }

  function follow(section) {
    var list = document.getElementById("live-events");
    var state = document.getElementById("live-state");
    var session = section.getAttribute("data-stream").replace(/\/live$/, "");
    var es = new EventSource(section.getAttribute("data-stream"));
    es.onopen = function () { state.textContent = "Following this session live."; };
    es.onerror = function () { state.textContent = "Live updates interrupted; retrying…"; };
    function parse(ev) { try { return JSON.parse(ev.data); } catch (e) { return null; } }
    es.addEventListener("artifact_stored", function (ev) {
      var d = parse(ev);
      if (!d) { return; }
      list.insertBefore(li([
        "#" + d.seq + " artifact stored: ",
        { href: session + "/artifacts/" + encodeURIComponent(d.artifact_id), text: d.name + " v" + d.version },
        " (" + d.size + " bytes)"
      ]), list.firstChild);
    });
    es.addEventListener("status_changed", function (ev) {
      var d = parse(ev);
      if (!d) { return; }
      var badge = document.querySelector("#status .badge");
      if (badge) {
        badge.textContent = d.to;
        badge.className = "badge st-" + d.to;
        badge.setAttribute("data-status", d.to);
      }
      list.insertBefore(li(["#" + d.seq + " status: " + d.from + " → " + d.to + (d.reason ? " (" + d.reason + ")" : "")]), list.firstChild);
      if (d.to !== "active" && d.to !== "suspended") { es.close(); state.textContent = "The session ended."; }
    });
    es.addEventListener("missed", function (ev) {
      var d = parse(ev);
      list.insertBefore(li(["(" + (d ? d.missed : "some") + " events missed: reload for all of them)"]), list.firstChild);
    });
    ["checkpoint_created", "metadata_updated", "artifact_deleted", "custom"].forEach(function (t) {
      es.addEventListener(t, function (ev) {
        var d = parse(ev);
        if (d) { list.insertBefore(li(["#" + d.seq + " " + t.replace("_", " ")]), list.firstChild); }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelector("[data-stream]");
    if (live && window.EventSource) { follow(live); }
  });
})();
