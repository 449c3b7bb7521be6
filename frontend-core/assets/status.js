// The cluster status page. Two polling loops:
// - GET /cluster every second: shards, replicas, leases and cache servers,
//   redrawn as a table on every answer;
// - GET /metrics every two seconds: the Prometheus text is parsed here and
//   the difference between two scrapes becomes one point (traffic, latency
//   percentiles, partial rate, rejected load, cache hit rate) in a ring
//   buffer of the last five minutes, drawn as inline SVG sparklines.
// Each loop waits for its answer before it schedules the next call, so a
// slow frontend is never asked twice at once.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const main = $("main");

  const CLUSTER_EVERY_MS = 1000;
  const METRICS_EVERY_MS = 2000;
  const FETCH_TIMEOUT_MS = 3000;
  const WINDOW_MS = 5 * 60 * 1000;
  const MAX_POINTS = Math.ceil(WINDOW_MS / METRICS_EVERY_MS) + 1;

  const objectiveMs = (() => {
    const fromUrl = Number(new URLSearchParams(window.location.search).get("objective_ms"));
    if (fromUrl > 0) return fromUrl;
    const fromPage = Number(main.dataset.objectiveMs);
    return fromPage > 0 ? fromPage : 100;
  })();

  // --- Small helpers -----------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The SVG namespace, taken from the page's own template (the HTML parser
  // puts <svg> there) rather than spelled out.
  const template = $("sparkline-template").content.firstElementChild;
  function svg(tag, attributes) {
    const node = document.createElementNS(template.namespaceURI, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  function duration(ms) {
    if (ms === null || ms === undefined || !(ms >= 0)) return "–";
    if (ms < 1) return ms.toFixed(2) + " ms";
    if (ms < 10) return ms.toFixed(1) + " ms";
    if (ms < 1000) return Math.round(ms) + " ms";
    return (ms / 1000).toFixed(1) + " s";
  }

  function rate(value, unit) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
    return value.toFixed(digits) + " " + unit;
  }

  // A 64-bit id from /cluster: a decimal string, kept as text.
  function idText(id) {
    return typeof id === "string" ? id : "?";
  }

  async function fetchWithTimeout(url) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
    try {
      const response = await fetch(url, { signal: controller.signal, cache: "no-store" });
      if (!response.ok) throw new Error(url + " answered HTTP " + response.status);
      return response;
    } catch (error) {
      if (error.name === "AbortError") throw new Error(url + " did not answer within " + FETCH_TIMEOUT_MS / 1000 + " s");
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  // Failures of either loop show in one banner, cleared when both succeed.
  const failures = {};
  function reportFailure(source, error) {
    failures[source] = error ? String(error.message || error) : null;
    const messages = Object.values(failures).filter(Boolean);
    const banner = $("conn-error");
    banner.textContent = messages.length ? "Cannot refresh: " + messages.join("; ") + ". Retrying…" : "";
    banner.hidden = messages.length === 0;
    main.classList.toggle("stale", messages.length > 0);
  }

  // --- The cluster table -------------------------------------------------

  function ttlCell(holder) {
    const cell = el("td", "ttl");
    if (!holder) {
      cell.textContent = "–";
      return cell;
    }
    const left = holder.ttl_left_ms;
    const granted = left + holder.since_renewal_ms;
    const meter = el("meter", "ttl-meter");
    meter.min = 0;
    meter.max = granted > 0 ? granted : 1;
    meter.low = meter.max * 0.34;
    meter.optimum = meter.max;
    meter.value = left;
    meter.setAttribute("aria-label", "lease time left");
    cell.appendChild(meter);
    cell.appendChild(el("span", "ttl-left", duration(left)));
    return cell;
  }

  function renderShards(view, holders) {
    const table = $("shards");
    for (const body of Array.from(table.tBodies)) body.remove();
    let unavailable = 0;
    let replicas = 0;
    for (const shard of view.shards) {
      const body = el("tbody", "shard");
      body.dataset.shard = shard.shard;
      body.dataset.state = shard.state;
      const head = el("tr", "shard-row");
      const th = el("th");
      th.scope = "rowgroup";
      th.colSpan = 6;
      th.appendChild(el("span", "shard-name", "Shard " + shard.shard));
      const ok = shard.state === "ok";
      const badge = el("span", "badge " + (ok ? "good" : "bad"), ok
        ? shard.replicas_live + (shard.replicas_live === 1 ? " replica" : " replicas")
        : "unavailable");
      badge.classList.add("shard-state");
      th.appendChild(badge);
      const generations = shard.generations_in_service || [];
      if (generations.length > 1) {
        th.appendChild(el("span", "badge warn rolling", "rolling: generations " + generations.join(" → ")));
      }
      if (shard.hedge_after_ms !== null && shard.hedge_after_ms !== undefined) {
        th.appendChild(el("span", "muted hedge", "hedge after " + duration(shard.hedge_after_ms)));
      }
      head.appendChild(th);
      body.appendChild(head);

      if (shard.replicas.length === 0) {
        unavailable += 1;
        const row = el("tr", "no-replicas");
        row.dataset.shard = shard.shard;
        const cell = el("td", "", "unavailable: no live replica holds a lease; answers miss this shard");
        cell.colSpan = 6;
        row.appendChild(cell);
        body.appendChild(row);
      }
      for (const replica of shard.replicas) {
        replicas += 1;
        const row = el("tr", "replica");
        row.dataset.shard = shard.shard;
        row.dataset.address = replica.address;
        const onProbation = replica.probation_ms !== null && replica.probation_ms !== undefined;
        row.dataset.state = onProbation ? "probation" : "ok";
        const address = el("td", "address");
        address.appendChild(el("code", "", replica.address));
        row.appendChild(address);
        row.appendChild(ttlCell(holders.get("leaf " + replica.address)));
        row.appendChild(el("td", "num latency", duration(replica.latency_ms)));
        row.appendChild(el("td", "num in-flight", String(replica.in_flight)));
        const probation = el("td", "probation");
        if (onProbation) {
          probation.appendChild(el("span", "badge warn", "on probation"));
          probation.appendChild(el("span", "muted", " " + duration(replica.probation_ms) + " left"));
        } else {
          probation.textContent = "–";
        }
        row.appendChild(probation);
        // Generations and lease ids are u64s sent as decimal strings: shown
        // as they are, never through a Number (exact only up to 2^53).
        row.appendChild(el("td", "num generation", idText(replica.generation)));
        body.appendChild(row);
      }
      table.appendChild(body);
    }
    $("shard-summary").textContent = view.shards.length + " shards, " + replicas + " live replicas" +
      (unavailable ? ", " + unavailable + " unavailable" : "");
  }

  function renderCaches(view, holders) {
    const list = $("caches");
    list.textContent = "";
    if (view.caches.length === 0) {
      list.appendChild(el("li", "empty", "No cache server holds a lease."));
      return;
    }
    for (const address of view.caches) {
      const item = el("li", "cache");
      item.dataset.address = address;
      item.appendChild(el("code", "", address));
      const holder = holders.get("cache " + address);
      item.appendChild(el("span", "muted", holder ? "lease " + duration(holder.ttl_left_ms) + " left" : ""));
      list.appendChild(item);
    }
  }

  // Where the rollout of the newest index generation stands.
  function renderRollout(rollout) {
    const line = $("rollout");
    if (!line || !rollout) return;
    const last = rollout.last_generation
      ? "last rollout: generation " + rollout.last_generation + " in " + duration(rollout.last_duration_ms)
      : "no rollout seen yet";
    line.dataset.state = rollout.in_progress ? "rolling" : "settled";
    line.textContent = rollout.in_progress
      ? "Rolling out generation " + rollout.generation + ": " + rollout.replicas_on_newest + " of " +
        rollout.replicas + " replicas on it, for " + duration(rollout.elapsed_ms) + " (" + last + ")"
      : "Generation " + rollout.generation + " on all " + rollout.replicas + " replicas; " + last;
  }

  function renderCluster(view) {
    const holders = new Map();
    for (const h of view.holders || []) holders.set(h.role + " " + h.address, h);
    const membership = $("membership");
    membership.textContent = view.membership_connected ? "membership connected" : "membership disconnected: routing on the last view";
    membership.className = "badge " + (view.membership_connected ? "good" : "bad");
    renderShards(view, holders);
    renderRollout(view.rollout);
    renderCaches(view, holders);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  async function pollCluster() {
    try {
      const response = await fetchWithTimeout("/cluster");
      renderCluster(await response.json());
      reportFailure("cluster", null);
    } catch (error) {
      reportFailure("cluster", error);
    }
    setTimeout(pollCluster, CLUSTER_EVERY_MS);
  }

  // --- Metrics -----------------------------------------------------------

  // Parses Prometheus text into [{name, labels, value}].
  function parseMetrics(text) {
    const samples = [];
    const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/;
    const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const raw of text.split("\n")) {
      if (!raw || raw[0] === "#") continue;
      const match = line.exec(raw);
      if (!match) continue;
      const labels = {};
      for (const l of (match[2] || "").matchAll(label)) labels[l[1]] = l[2];
      samples.push({ name: match[1], labels, value: parseFloat(match[3]) });
    }
    return samples;
  }

  // The counters and gauges the charts need, from one scrape.
  function digest(samples) {
    const d = {
      requests: {},
      buckets: new Map(),
      rejections: 0,
      lookups: {},
      gauges: {},
    };
    for (const s of samples) {
      switch (s.name) {
        case "frontend_search_requests_total":
          d.requests[s.labels.outcome] = (d.requests[s.labels.outcome] || 0) + s.value;
          break;
        case "frontend_search_duration_seconds_bucket": {
          const le = s.labels.le === "+Inf" ? Infinity : parseFloat(s.labels.le);
          d.buckets.set(le, (d.buckets.get(le) || 0) + s.value);
          break;
        }
        case "frontend_admission_rejections_total":
          d.rejections += s.value;
          break;
        case "frontend_cache_lookups_total":
          d.lookups[s.labels.result] = (d.lookups[s.labels.result] || 0) + s.value;
          break;
        case "frontend_admission_limit":
        case "frontend_admission_in_flight":
        case "frontend_admission_queue_depth":
          d.gauges[s.name] = s.value;
          break;
        default:
      }
    }
    return d;
  }

  // A counter's increase; a restarted frontend starts again from zero.
  const increase = (now, before) => (now >= (before || 0) ? now - (before || 0) : now);

  function sumIncrease(now, before) {
    let total = 0;
    for (const key of Object.keys(now)) total += increase(now[key], before[key]);
    return total;
  }

  // The q-quantile from cumulative bucket increases, interpolating
  // linearly inside the bucket (as Prometheus' histogram_quantile does).
  function quantile(q, bucketIncreases) {
    const bounds = Array.from(bucketIncreases.keys()).sort((a, b) => a - b);
    if (bounds.length === 0) return null;
    const total = bucketIncreases.get(Infinity) || bucketIncreases.get(bounds[bounds.length - 1]);
    if (!(total > 0)) return null;
    const rank = q * total;
    let lower = 0;
    let below = 0;
    for (const upper of bounds) {
      const count = bucketIncreases.get(upper);
      if (count >= rank) {
        if (upper === Infinity) return lower;
        const inBucket = count - below;
        return inBucket > 0 ? lower + ((upper - lower) * (rank - below)) / inBucket : upper;
      }
      lower = upper;
      below = count;
    }
    return lower;
  }

  function point(now, before, seconds) {
    const requests = sumIncrease(now.requests, before.requests);
    const complete = increase(now.requests.complete || 0, before.requests.complete);
    const partial = increase(now.requests.partial || 0, before.requests.partial);
    const buckets = new Map();
    for (const [le, count] of now.buckets) buckets.set(le, increase(count, before.buckets.get(le)));
    const p50 = quantile(0.5, buckets);
    const p99 = quantile(0.99, buckets);
    const lookups = sumIncrease(now.lookups, before.lookups);
    const hits = increase(now.lookups.hit || 0, before.lookups.hit);
    return {
      traffic: requests / seconds,
      p50: p50 === null ? null : p50 * 1000,
      p99: p99 === null ? null : p99 * 1000,
      partial: complete + partial > 0 ? (100 * partial) / (complete + partial) : null,
      rejected: increase(now.rejections, before.rejections) / seconds,
      hits,
      lookups,
      cacheHit: lookups > 0 ? (100 * hits) / lookups : null,
      inFlight: now.gauges.frontend_admission_in_flight === undefined ? null : now.gauges.frontend_admission_in_flight,
      limit: now.gauges.frontend_admission_limit > 0 ? now.gauges.frontend_admission_limit : null,
    };
  }

  const points = []; // {t, traffic, p50, p99, partial, rejected, hits, lookups, cacheHit, inFlight, limit}
  let previous = null;

  async function pollMetrics() {
    try {
      const response = await fetchWithTimeout("/metrics");
      const now = { t: Date.now(), data: digest(parseMetrics(await response.text())) };
      if (previous && now.t > previous.t) {
        const p = point(now.data, previous.data, (now.t - previous.t) / 1000);
        p.t = now.t;
        points.push(p);
        while (points.length > MAX_POINTS) points.shift();
      }
      previous = now;
      renderAdmission(now.data.gauges);
      renderCharts();
      reportFailure("metrics", null);
    } catch (error) {
      reportFailure("metrics", error);
    }
    setTimeout(pollMetrics, METRICS_EVERY_MS);
  }

  function renderAdmission(gauges) {
    const limit = gauges.frontend_admission_limit;
    if (limit === undefined) return;
    $("admission").textContent = "Admission: " +
      (limit > 0 ? "limit " + limit : "off") +
      ", " + (gauges.frontend_admission_in_flight || 0) + " in flight, " +
      (gauges.frontend_admission_queue_depth || 0) + " queued · latency objective " + duration(objectiveMs);
  }

  // --- Sparklines --------------------------------------------------------

  const WIDTH = 300;
  const HEIGHT = 64;

  // A round upper bound for the y axis: 1, 2 or 5 times a power of ten.
  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  // SVG path data for one series: a line through the points that have a
  // value (a missing value breaks it) and the area under that line.
  function pathData(series, key, now, max) {
    let line = "";
    let area = "";
    let run = [];
    const flush = () => {
      if (run.length > 0) {
        const points = run.map(([x, y]) => x.toFixed(1) + " " + y.toFixed(1));
        line += "M" + points.join("L");
        area += "M" + run[0][0].toFixed(1) + " " + HEIGHT + "L" + points.join("L") +
          "L" + run[run.length - 1][0].toFixed(1) + " " + HEIGHT + "Z";
      }
      run = [];
    };
    for (const p of series) {
      const v = p[key];
      if (v === null || v === undefined || !isFinite(v)) {
        flush();
        continue;
      }
      const x = WIDTH - ((now - p.t) / WINDOW_MS) * WIDTH;
      const y = HEIGHT - (Math.min(v, max) / max) * (HEIGHT - 2) - 1;
      run.push([x, y]);
    }
    flush();
    return { line, area };
  }

  const CHARTS = {
    "chart-traffic": {
      lines: [{ key: "traffic", name: "requests/s", className: "line-a" }],
      unit: "req/s",
      describe: (last) => rate(last.traffic, "req/s"),
    },
    "chart-latency": {
      lines: [
        { key: "p50", name: "p50", className: "line-a" },
        { key: "p99", name: "p99", className: "line-b" },
      ],
      unit: "ms",
      floor: () => objectiveMs * 1.25,
      objective: () => objectiveMs,
      describe: (last) => "p50 " + duration(last.p50) + " · p99 " + duration(last.p99),
    },
    "chart-partial": {
      lines: [{ key: "partial", name: "partial %", className: "line-b" }],
      unit: "%",
      floor: () => 1,
      describe: (last) => rate(last.partial, "%"),
    },
    "chart-rejected": {
      lines: [{ key: "rejected", name: "rejected/s", className: "line-b" }],
      unit: "req/s",
      describe: (last) => rate(last.rejected, "req/s"),
    },
    "chart-admission": {
      lines: [
        { key: "inFlight", name: "in flight", className: "line-a" },
        { key: "limit", name: "limit", className: "line-b" },
      ],
      unit: "",
      floor: () => 1,
      describe: (last) => (last.inFlight === null ? "–" : last.inFlight + " in flight") +
        (last.limit === null ? "" : " · limit " + last.limit),
    },
    "chart-cache": {
      lines: [{ key: "cacheHit", name: "hit %", className: "line-a" }],
      unit: "%",
      fixedMax: 100,
      describe: (last) => (last.cacheHit === null ? "no lookups" : rate(last.cacheHit, "%")),
    },
  };

  // Builds each chart's SVG, legend and scale once.
  function setUpCharts() {
    for (const [id, chart] of Object.entries(CHARTS)) {
      const figure = $(id);
      const frame = el("div", "chart-frame");
      const image = template.cloneNode(true);
      image.setAttribute("viewBox", "0 0 " + WIDTH + " " + HEIGHT);
      image.appendChild(svg("line", { x1: 0, x2: WIDTH, y1: HEIGHT - 0.5, y2: HEIGHT - 0.5, class: "axis" }));
      // Areas first, so that every line is drawn over them.
      chart.areas = chart.lines.map((line) => image.appendChild(svg("path", { class: "area " + line.className })));
      chart.paths = chart.lines.map((line) =>
        image.appendChild(svg("path", { class: "line " + line.className, "vector-effect": "non-scaling-stroke" })));
      if (chart.objective) {
        chart.objectiveLine = svg("line", { x1: 0, x2: WIDTH, class: "objective", "vector-effect": "non-scaling-stroke" });
        image.appendChild(chart.objectiveLine);
      }
      frame.appendChild(image);
      chart.scale = el("span", "chart-max");
      frame.appendChild(chart.scale);
      figure.appendChild(frame);
      const axis = el("div", "chart-axis");
      axis.appendChild(el("span", "", "5 min ago"));
      if (chart.lines.length > 1 || chart.objective) {
        const legend = el("span", "legend");
        for (const line of chart.lines) legend.appendChild(el("span", "key " + line.className, line.name));
        if (chart.objective) legend.appendChild(el("span", "key objective", "objective"));
        axis.appendChild(legend);
      }
      axis.appendChild(el("span", "", "now"));
      figure.appendChild(axis);
      chart.svg = image;
    }
  }

  function renderCharts() {
    const now = points.length ? points[points.length - 1].t : Date.now();
    const last = points[points.length - 1] || {};
    for (const [id, chart] of Object.entries(CHARTS)) {
      let max = chart.fixedMax;
      if (!max) {
        let highest = chart.floor ? chart.floor() : 0;
        for (const p of points) {
          for (const line of chart.lines) {
            const v = p[line.key];
            if (v !== null && v !== undefined && isFinite(v)) highest = Math.max(highest, v);
          }
        }
        max = niceMax(highest);
      }
      chart.lines.forEach((line, i) => {
        const data = pathData(points, line.key, now, max);
        chart.paths[i].setAttribute("d", data.line);
        chart.areas[i].setAttribute("d", data.area);
      });
      if (chart.objectiveLine) {
        const y = HEIGHT - (chart.objective() / max) * (HEIGHT - 2) - 1;
        chart.objectiveLine.setAttribute("y1", y.toFixed(1));
        chart.objectiveLine.setAttribute("y2", y.toFixed(1));
      }
      chart.scale.textContent = chart.unit === "ms" ? duration(max) : (max + " " + chart.unit).trim();
      const figure = $(id);
      const value = points.length ? chart.describe(last) : "collecting…";
      figure.querySelector(".chart-value").textContent = value;
      chart.svg.setAttribute("aria-label", figure.querySelector(".chart-title").textContent +
        " over the last 5 minutes, now " + value + ", scale up to " + chart.scale.textContent);
    }
    // Hit rate of the cache tier over the whole window.
    let hits = 0;
    let lookups = 0;
    for (const p of points) {
      hits += p.hits;
      lookups += p.lookups;
    }
    $("cache-hit-rate").textContent = lookups > 0 ? rate((100 * hits) / lookups, "%") : "no lookups yet";
    const span = points.length > 1 ? (points[points.length - 1].t - points[0].t) / 1000 : 0;
    $("window").textContent = span > 0 ? "(" + Math.round(span) + " s of samples, every " + METRICS_EVERY_MS / 1000 + " s)" : "";
  }

  setUpCharts();
  renderCharts();
  pollCluster();
  pollMetrics();
})();
