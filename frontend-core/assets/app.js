// The search page: reads the query from the URL, calls GET /search, and
// renders hits, coverage and the partial-answer notice. A new search is
// pushed onto the history, so searches can be shared and Back works.
//
// All text from the server is inserted as text nodes; the only markup taken
// from a response is the <b>…</b> around matched terms in snippets.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("search-form");
  const input = $("q");
  const results = $("results");

  // Parameters carried from the page URL to GET /search.
  const PASSED = ["q", "k", "timeout_ms", "nocache"];

  let inFlight = null;

  function paramsFromLocation() {
    const from = new URLSearchParams(window.location.search);
    const params = new URLSearchParams();
    for (const name of PASSED) {
      const value = from.get(name);
      if (value !== null && value !== "") params.set(name, value);
    }
    return params;
  }

  function paramsFromForm() {
    const params = new URLSearchParams();
    params.set("q", input.value.trim());
    const k = $("k").value.trim();
    const timeout = $("timeout_ms").value.trim();
    if (k) params.set("k", k);
    if (timeout) params.set("timeout_ms", timeout);
    if ($("nocache").checked) params.set("nocache", "true");
    return params;
  }

  function fillForm(params) {
    input.value = params.get("q") || "";
    $("k").value = params.get("k") || "";
    $("timeout_ms").value = params.get("timeout_ms") || "";
    const nocache = params.get("nocache");
    $("nocache").checked = nocache === "true" || nocache === "1" || nocache === "yes";
    if (params.has("k") || params.has("timeout_ms") || params.has("nocache")) {
      $("options").open = true;
    }
  }

  // --- Rendering helpers -------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

  // Leaves send snippets HTML-escaped; this turns entities back into the
  // characters they stand for, to be inserted as text (never as markup).
  function decodeEntities(text) {
    return text.replace(/&(#x[0-9a-f]{1,6}|#[0-9]{1,7}|amp|lt|gt|quot|apos);/gi, (whole, name) => {
      if (name[0] === "#") {
        const code = name[1] === "x" || name[1] === "X"
          ? parseInt(name.slice(2), 16)
          : parseInt(name.slice(1), 10);
        return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
      }
      return ENTITIES[name.toLowerCase()];
    });
  }

  // Renders a snippet into `target`: text between <b> and </b> becomes a
  // <mark>; everything else, tags included, is plain text.
  function renderSnippet(target, snippet) {
    target.textContent = "";
    let mark = null;
    for (const part of String(snippet).split(/(<\/?b>)/i)) {
      const lower = part.toLowerCase();
      if (lower === "<b>") {
        if (!mark) {
          mark = el("mark");
          target.appendChild(mark);
        }
      } else if (lower === "</b>") {
        mark = null;
      } else if (part) {
        (mark || target).appendChild(document.createTextNode(decodeEntities(part)));
      }
    }
  }

  const number = (n) => Number(n).toLocaleString("en-US");

  function percent(p) {
    if (!(p >= 0)) return "?";
    if (p >= 100) return "100%";
    // Never round a partial answer up to 100%.
    if (p > 99) return (Math.floor(p * 10) / 10).toFixed(1) + "%";
    return Math.round(p) + "%";
  }

  function duration(ms) {
    if (!(ms >= 0)) return "?";
    if (ms < 10) return ms.toFixed(1) + " ms";
    if (ms < 1000) return Math.round(ms) + " ms";
    return (ms / 1000).toFixed(2) + " s";
  }

  const STATE_WORDS = {
    answered: "answered",
    partial: "searched only part of its documents",
    timed_out: "timed out",
    failed: "failed",
    unavailable: "unavailable",
  };

  function stateWords(state) {
    return STATE_WORDS[state] || String(state).replace(/_/g, " ");
  }

  // "Partial answer: shard 2 timed out, shard 3 unavailable — estimated
  // completeness 74% (coverage 75% of documents)".
  function partialText(body) {
    const coverage = body.coverage || {};
    const missing = (body.shards || [])
      .filter((s) => s.state !== "answered")
      .sort((a, b) => a.shard - b.shard)
      .map((s) => {
        if (s.state === "partial" && s.docs_total > 0) {
          return "shard " + s.shard + " searched " +
            percent((100 * s.docs_searched) / s.docs_total) + " of its documents";
        }
        return "shard " + s.shard + " " + stateWords(s.state);
      });
    if (missing.length === 0 && coverage.shards_total) {
      missing.push(number(coverage.shards_answered) + " of " +
        number(coverage.shards_total) + " shards answered");
    }
    const recall = typeof body.estimated_recall === "number"
      ? percent(body.estimated_recall * 100) : "unknown";
    return "Partial answer: " + missing.join(", ") + " — estimated completeness " +
      recall + " (coverage " + percent(coverage.percent) + " of documents)";
  }

  function reset() {
    for (const id of ["error", "partial-notice", "summary", "no-results", "shard-details", "intro"]) {
      $(id).hidden = true;
    }
    $("hits").textContent = "";
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  function renderAnswer(body) {
    const coverage = body.coverage || {};
    const hits = Array.isArray(body.hits) ? body.hits : [];

    if (body.partial) {
      const notice = $("partial-notice");
      notice.textContent = partialText(body);
      notice.hidden = false;
    }

    $("result-count").textContent = number(hits.length) + (hits.length === 1 ? " result" : " results");
    $("took").textContent = "in " + duration(body.took_ms);
    const cache = $("cache-status");
    cache.textContent = body.cache === "bypass" ? "cache bypassed" : "cache " + body.cache;
    cache.dataset.cache = body.cache;
    $("coverage").textContent = "· searched " + number(coverage.docs_searched || 0) + " of " +
      number(coverage.docs_total || 0) + " documents (" + percent(coverage.percent) + ")";
    $("summary").hidden = false;

    const list = $("hits");
    for (const hit of hits) {
      const item = el("li", "hit");
      item.dataset.id = hit.id;
      item.dataset.shard = hit.shard;
      item.appendChild(el("h2", "hit-title", hit.title || hit.id));
      const snippet = el("p", "hit-snippet");
      renderSnippet(snippet, hit.snippet || "");
      item.appendChild(snippet);
      const meta = el("p", "hit-meta");
      meta.appendChild(el("span", "hit-score", "score " + Number(hit.score).toFixed(3)));
      meta.appendChild(el("span", "hit-shard", "shard " + hit.shard));
      meta.appendChild(el("span", "hit-id", hit.id));
      item.appendChild(meta);
      list.appendChild(item);
    }
    $("no-results").textContent = body.partial
      ? "No documents match this query in the shards that answered."
      : "No documents match this query.";
    $("no-results").hidden = hits.length > 0;

    const shards = Array.isArray(body.shards) ? body.shards : [];
    if (shards.length > 0) {
      const tbody = $("shard-table").tBodies[0];
      tbody.textContent = "";
      for (const s of shards.slice().sort((a, b) => a.shard - b.shard)) {
        const row = el("tr", "shard-result");
        row.dataset.shard = s.shard;
        row.dataset.state = s.state;
        row.appendChild(el("td", "", String(s.shard)));
        row.appendChild(el("td", "", stateWords(s.state)));
        row.appendChild(el("td", "", number(s.docs_searched) + " of " + number(s.docs_total)));
        row.appendChild(el("td", "", duration(s.took_ms)));
        row.appendChild(el("td", "", s.hedges ? s.hedges + (s.hedge_won ? " (won)" : "") : "–"));
        tbody.appendChild(row);
      }
      const details = $("shard-details");
      details.hidden = false;
      if (body.partial) details.open = true;
    }
  }

  function render(status, body) {
    reset();
    if (body && body.error) {
      const code = body.error.code ? " (" + body.error.code + ")" : "";
      showError((status === 400 ? "Bad query: " : "Search failed: ") + body.error.message + code);
    }
    // A 503 may carry the (partial) answer as well as the error.
    if (body && body.coverage) {
      renderAnswer(body);
    } else if (!body || !body.error) {
      showError("Unexpected answer from the server (HTTP " + status + ").");
    }
  }

  async function search(params) {
    const q = (params.get("q") || "").trim();
    document.title = q ? q + " – Search" : "Search";
    if (inFlight) inFlight.abort();
    if (!q) {
      reset();
      $("intro").hidden = false;
      return;
    }
    const controller = new AbortController();
    inFlight = controller;
    results.setAttribute("aria-busy", "true");
    results.classList.add("loading");
    try {
      const response = await fetch("/search?" + params.toString(), {
        signal: controller.signal,
        cache: "no-store",
        headers: { accept: "application/json" },
      });
      let body = null;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      if (inFlight === controller) render(response.status, body);
    } catch (error) {
      if (error.name !== "AbortError" && inFlight === controller) {
        reset();
        showError("Could not reach the frontend: " + error.message);
      }
    } finally {
      if (inFlight === controller) {
        inFlight = null;
        results.setAttribute("aria-busy", "false");
        results.classList.remove("loading");
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = paramsFromForm();
    if (!params.get("q")) {
      input.focus();
      return;
    }
    const url = "/?" + params.toString();
    if (url === window.location.pathname + window.location.search) {
      history.replaceState(null, "", url);
    } else {
      history.pushState(null, "", url);
    }
    search(params);
  });

  window.addEventListener("popstate", () => {
    const params = paramsFromLocation();
    fillForm(params);
    search(params);
  });

  const initial = paramsFromLocation();
  fillForm(initial);
  search(initial);
})();
