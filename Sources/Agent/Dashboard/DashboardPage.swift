/// `GET /ui`: one self-contained page (no external assets: the cluster may have no internet, and the
/// API token must not leak to a CDN). It polls `/v1/history` once and `/v1/status` and
/// `/v1/decisions` every second, and draws with a canvas: the demand line of each demand-driven
/// service against its running containers, priority 1 tracking demand and batch filling the rest.
/// Every ten seconds it asks `/v1/report/utilization?window=10m` for the utilization panel: capacity
/// reserved and used per priority, and what sharing the nodes saves (docs/utilization.md).
///
/// With an API token the page is opened as `/ui#token=TOKEN`. The fragment never leaves the
/// browser (it is not sent to the server, so not logged, nor put in a Referer); the page keeps the
/// token for its tab in `sessionStorage`, takes it out of the address bar (so it is not
/// bookmarked, shared or left in the history) and sends it as `Authorization: Bearer` on its
/// fetches. Not a cookie: a browser sends cookies with other sites' requests too, which is the
/// cross-site forgery a token must not allow; not the query string, which servers and proxies log.
enum DashboardPage {
    static let html = #"""
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>Microscale</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>
         body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }
         h1 { font-size: 18px; margin: 0 0 8px; } h2 { font-size: 15px; margin: 16px 0 6px; }
         #chart { width: 100%; height: 320px; background: #fff; border: 1px solid #ddd; }
         table { border-collapse: collapse; background: #fff; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
         .legend span { display: inline-block; margin-right: 14px; } .sw { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
         #err { color: #b00; }
        </style></head><body>
        <h1>Microscale <small id="leader"></small></h1>
        <div id="err"></div>
        <canvas id="chart" data-points="0"></canvas>
        <div class="legend" id="legend"></div>
        <h2>Utilization, last 10 minutes</h2>
        <table id="utilization"><tr><th>priority</th><th>reserved (cores)</th><th>peak</th><th>running</th><th>busy</th><th>reserved %</th><th>busy %</th></tr></table>
        <p id="compaction"></p>
        <h2>Members</h2><table id="members"><tr><th>node</th><th>status</th><th>role</th><th>assigned</th><th>running</th></tr></table>
        <h2>Latest decisions</h2><table id="decisions"><tr><th>#</th><th>when</th><th>summary</th><th>reasons</th></tr></table>
        <script>
        const colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
        let history = [];
        const windowMs = 10 * 60 * 1000;
        function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c])); }
        // Numbers as people write them (69.1, not 69.09833951060915): as the CLI and the decision text.
        function num(v) { return v == null ? "-" : String(Number(v.toFixed(Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3))); }
        function pct(share) { return num(Math.round(share * 1000) / 10) + "%"; }
        async function utilization() {
          try {
            const u = await get("/v1/report/utilization?window=10m");
            const rows = u.levels.map(l => "<tr><td>" + l.priority + (l.andBelow ? "+" : "") + "</td><td>" + num(l.reservedCores) + "</td><td>" + num(l.reservedPeakCores) + "</td><td>" + num(l.runningCores) + "</td><td>" + num(l.busyCores) + "</td><td>" + pct(l.reservedShare) + "</td><td>" + pct(l.busyShare) + "</td></tr>");
            rows.push("<tr><td>all</td><td>" + num(u.reservedShare * u.capacityCores) + "</td><td></td><td>" + num(u.runningShare * u.capacityCores) + "</td><td>" + num(u.busyShare * u.capacityCores) + "</td><td>" + pct(u.reservedShare) + "</td><td>" + pct(u.busyShare) + "</td></tr>");
            document.getElementById("utilization").innerHTML = "<tr><th>priority</th><th>reserved (cores)</th><th>peak</th><th>running</th><th>busy</th><th>reserved %</th><th>busy %</th></tr>" + rows.join("");
            const c = u.compaction;
            document.getElementById("compaction").textContent = c
              ? "Sharing saves " + c.savedNodes + " node" + (Math.abs(c.savedNodes) === 1 ? "" : "s") + ", " + num(Math.round(c.savedPercent * 10) / 10) + "%: priority 1 alone needs " + c.priorityOneNodes + ", batch alone " + c.batchNodes + ", separately " + c.separateNodes + "; shared " + c.sharedNodes + " (" + u.samples + " samples of " + num(u.capacityCores) + " cores)."
              : "No utilization samples yet.";
          } catch (e) { document.getElementById("compaction").textContent = String(e); }
        }
        function counts(c) { return Object.keys(c || {}).sort().map(k => k + "=" + c[k]).join(", ") || "-"; }
        // The API token from "#token=..." (see DashboardPage), else the one this tab was given before.
        let token = null;
        try { token = sessionStorage.getItem("microscale-token"); } catch (e) {}
        const given = /(?:^#|&)token=([^&]*)/.exec(location.hash);
        if (given) {
          try { token = decodeURIComponent(given[1]); } catch (e) { token = given[1]; }
          try { sessionStorage.setItem("microscale-token", token); } catch (e) {}
          window.history.replaceState(null, "", location.pathname + location.search);
        }
        async function get(path) {
          const r = await fetch(path, { headers: token ? { "Authorization": "Bearer " + token } : {} });
          if (r.status === 401) throw new Error("this agent requires its API token: open " + location.pathname + "#token=TOKEN (the agent's --api-token)");
          if (!r.ok) throw new Error(path + ": " + r.status + " " + await r.text());
          return r.json();
        }
        function draw() {
          const cv = document.getElementById("chart"), ctx = cv.getContext("2d");
          cv.width = cv.clientWidth; cv.height = cv.clientHeight;
          ctx.clearRect(0, 0, cv.width, cv.height);
          cv.dataset.points = String(history.length);
          if (history.length === 0) return;
          // The x axis spans what there is, from one minute up to ten.
          const now = history[history.length - 1].time;
          const span = Math.min(windowMs, Math.max(60 * 1000, now - history[0].time)), t0 = now - span;
          const names = [...new Set(history.flatMap(h => h.services.map(s => s.name)))];
          let max = 1;
          for (const h of history) for (const s of h.services) {
            max = Math.max(max, s.running, s.desired);
            const per = s.perContainer || 1;
            if (s.demand != null) max = Math.max(max, s.demand / per);
          }
          const x = t => 40 + (cv.width - 50) * (t - t0) / span, y = v => cv.height - 20 - (cv.height - 30) * v / max;
          ctx.strokeStyle = "#eee"; ctx.fillStyle = "#888"; ctx.font = "11px sans-serif";
          for (let i = 0; i <= 4; i++) { const v = max * i / 4; ctx.beginPath(); ctx.moveTo(40, y(v)); ctx.lineTo(cv.width - 10, y(v)); ctx.stroke(); ctx.fillText(v.toFixed(0), 4, y(v) + 4); }
          const legend = [];
          names.forEach((n, i) => {
            const col = colors[i % colors.length];
            ctx.strokeStyle = col; ctx.lineWidth = 2; ctx.setLineDash([]); ctx.beginPath();
            history.forEach((h, j) => { const s = h.services.find(s => s.name === n); const v = s ? s.running : 0; j ? ctx.lineTo(x(h.time), y(v)) : ctx.moveTo(x(h.time), y(v)); });
            ctx.stroke();
            const withDemand = history.filter(h => { const s = h.services.find(s => s.name === n); return s && s.demand != null; });
            if (withDemand.length) {
              ctx.setLineDash([5, 4]); ctx.lineWidth = 1.5; ctx.beginPath();
              withDemand.forEach((h, j) => { const s = h.services.find(s => s.name === n); const v = s.demand / (s.perContainer || 10); j ? ctx.lineTo(x(h.time), y(v)) : ctx.moveTo(x(h.time), y(v)); });
              ctx.stroke();
            }
            const last = history[history.length - 1].services.find(s => s.name === n);
            legend.push('<span><i class="sw" style="background:' + col + '"></i>' + esc(n) + (last ? " (priority " + last.priority + ", running " + last.running + (last.demand != null ? ", demand " + num(last.demand) + (last.demandUnit ? " " + esc(last.demandUnit) : "") : "") + ")" : "") + "</span>");
          });
          document.getElementById("legend").innerHTML = legend.join("") + "<span>solid: running containers; dashed: demand in containers</span>";
        }
        async function tick() {
          try {
            const s = await get("/v1/status");
            document.getElementById("leader").textContent = "leader " + s.leader + ", term " + s.term;
            const sample = { time: Date.now(), services: s.services, nodes: s.nodes };
            history.push(sample);
            history = history.filter(h => h.time >= sample.time - windowMs);
            document.getElementById("members").innerHTML = "<tr><th>node</th><th>status</th><th>role</th><th>assigned</th><th>running</th></tr>" +
              s.nodes.map(n => "<tr><td>" + esc(n.name) + "</td><td>" + esc(n.status) + (n.drained ? " (drained)" : "") + "</td><td>" + esc(n.role) + "</td><td>" + esc(counts(n.assigned)) + "</td><td>" + esc(counts(n.running)) + "</td></tr>").join("");
            const d = await get("/v1/decisions?limit=10");
            document.getElementById("decisions").innerHTML = "<tr><th>#</th><th>when</th><th>summary</th><th>reasons</th></tr>" +
              d.reverse().map(x => "<tr><td>" + x.index + "</td><td>" + new Date(x.timestampMilliseconds).toLocaleTimeString() + "</td><td>" + esc(x.summary) + "</td><td>" + esc(x.reasons.slice(0, 4).join("; ")) + "</td></tr>").join("");
            document.getElementById("err").textContent = "";
          } catch (e) { document.getElementById("err").textContent = String(e); }
          draw();
        }
        (async () => {
          try { history = (await get("/v1/history")).map(h => ({ time: h.time, services: h.services, nodes: h.nodes })); } catch (e) {}
          await tick();
          await utilization();
          setInterval(tick, 1000);
          setInterval(utilization, 10000);
        })();
        </script></body></html>
        """#
}
