"""The dashboard's Jinja2 templates (autoescaped; kept in code so they ship with it)."""

from __future__ import annotations

__all__ = ["TEMPLATES"]

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{% block title %}hplus{% endblock %} · hplus</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } table { border-collapse: collapse; }
th, td { padding: .3em .7em; border-bottom: 1px solid #ddd; text-align: left; }
tr.state-down td { background: #fbd5d5; } tr.state-down td.state { color: #a00; font-weight: bold; }
tr.state-degraded td { background: #fdf0c8; } tr.state-up td.state { color: #070; }
.muted { color: #777; } .error { color: #a00; } form.inline { display: inline; }
form.search { float: right; } form.search input { width: 24em; font-family: monospace; }
table.trace td { vertical-align: top; } table.trace td.hop, td.num { white-space: nowrap; }
tr.culprit td { background: #fbd5d5; } tr.culprit td.status { color: #a00; font-weight: bold; }
td.bar { width: 30%; min-width: 12em; } td.bar div { position: relative; height: 1em; }
td.bar span { position: absolute; height: 100%; background: #8ab; min-width: 2px; }
tr.culprit td.bar span { background: #c33; } .tier { font-size: .85em; color: #555; }
code { font-size: .95em; }
</style>
</head>
<body>
{% block search %}
<form class="search" method="get" action="/trace" role="search">
<label>Request id <input name="id" id="trace-search" placeholder="x-request-id (32 hex digits)"
 autocomplete="off" spellcheck="false"></label>
<button type="submit" id="trace-go">Trace</button>
</form>
{% endblock %}
{% block body %}{% endblock %}
</body>
</html>
"""

_LOGIN = """{% extends "base.html" %}
{% block title %}Sign in{% endblock %}
{% block search %}{% endblock %}
{% block body %}
<h1>hplus operations — sign in</h1>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="post" action="/login">
<label>Password <input type="password" name="password" id="password" autofocus></label>
<button type="submit" id="sign-in">Sign in</button>
</form>
<p class="muted">The password is in the node's data directory (dashboard-password).</p>
{% endblock %}
"""

_OVERVIEW = """{% extends "base.html" %}
{% block title %}Hospitals{% endblock %}
{% block body %}
<h1>Hospitals <span class="muted">node {{ node_id }}</span>
<form class="inline" method="post" action="/logout"><button>Sign out</button></form></h1>
<p id="summary">{{ rows|selectattr("state", "equalto", "up")|list|length }} of {{ rows|length }}
hospitals up</p>
<p id="failed" class="error">{% if failed %}Not available: {{ failed|join(", ") }}{% endif %}</p>
<table id="hospitals">
<thead><tr><th>hospital</th><th>name</th><th>state</th><th>tunnels</th><th>edge</th>
<th>contracts</th><th>RTT ms</th><th>in flight</th><th>sync lag s</th><th>sync error</th>
{% for c in columns %}<th>{{ c.heading }}</th>{% endfor %}</tr></thead>
<tbody>
{% for r in rows %}
<tr class="state-{{ r.state }}" data-hospital="{{ r.hospital_id }}">
<td><a href="/hospital/{{ r.hospital_id|urlencode }}">{{ r.hospital_id }}</a></td>
<td>{{ r.name }}</td><td class="state">{{ r.state }}</td><td>{{ r.tunnels }}</td>
<td>{{ r.edge_version }}</td><td>{{ r.contract_release }}</td>
<td>{{ "%.1f"|format(r.rtt_ms) if r.rtt_ms is not none else "-" }}</td>
<td>{{ r.in_flight }}</td>
<td>{{ r.sync_lag_seconds if r.sync_lag_seconds is not none else "-" }}</td>
<td>{{ r.sync_error }}</td>
{% for c in columns %}<td>{{ r.extra.get(c.field, "") }}</td>{% endfor %}
</tr>
{% endfor %}
</tbody>
</table>
<p class="muted">Refreshed every {{ refresh_ms / 1000 }} s;
last: <span id="refreshed">now</span></p>
<script>
const REFRESH_MS = {{ refresh_ms }};
function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  tr.appendChild(td);
  return td;
}
async function refresh() {
  try {
    const res = await fetch("/api/overview", {credentials: "same-origin"});
    if (res.status === 401) { window.location = "/login"; return; }
    const data = await res.json();
    const body = document.querySelector("#hospitals tbody");
    const fresh = document.createElement("tbody");
    for (const r of data.rows) {
      const tr = document.createElement("tr");
      tr.className = "state-" + r.state;
      tr.dataset.hospital = r.hospital_id;
      const link = document.createElement("a");
      link.href = "/hospital/" + encodeURIComponent(r.hospital_id);
      link.textContent = r.hospital_id;
      cell(tr, "").appendChild(link);
      cell(tr, r.name);
      cell(tr, r.state, "state");
      cell(tr, String(r.tunnels));
      cell(tr, r.edge_version);
      cell(tr, r.contract_release);
      cell(tr, r.rtt_ms === null ? "-" : r.rtt_ms.toFixed(1));
      cell(tr, String(r.in_flight));
      cell(tr, r.sync_lag_seconds === null ? "-" : String(r.sync_lag_seconds));
      cell(tr, r.sync_error);
      for (const c of data.columns) cell(tr, r.extra[c] === undefined ? "" : String(r.extra[c]));
      fresh.appendChild(tr);
    }
    body.replaceWith(fresh);
    document.getElementById("summary").textContent =
      data.up + " of " + data.total + " hospitals up";
    document.getElementById("failed").textContent =
      data.failed.length ? "Not available: " + data.failed.join(", ") : "";
    document.getElementById("refreshed").textContent = new Date().toISOString();
  } catch (e) {
    document.getElementById("failed").textContent = "Refresh failed: " + e;
  }
}
setInterval(refresh, REFRESH_MS);
</script>
{% endblock %}
"""

_HOSPITAL = """{% extends "base.html" %}
{% block title %}{{ row.hospital_id }}{% endblock %}
{% block body %}
<p><a href="/">All hospitals</a></p>
<h1>{{ row.hospital_id }} <span class="muted">{{ row.name }}</span></h1>
<table id="hospital">
<tr class="state-{{ row.state }}"><th>state</th><td class="state">{{ row.state }}</td></tr>
<tr><th>tunnels</th><td>{{ row.tunnels }}</td></tr>
<tr><th>edge version</th><td>{{ row.edge_version }}</td></tr>
<tr><th>contract release</th><td>{{ row.contract_release }}</td></tr>
<tr><th>RTT</th><td>{{ "%.1f ms"|format(row.rtt_ms) if row.rtt_ms is not none else "-" }}</td></tr>
<tr><th>calls in flight</th><td>{{ row.in_flight }}</td></tr>
<tr><th>last seen</th><td>{{ row.last_seen }}</td></tr>
<tr><th>sync lag</th>
<td>{{ row.sync_lag_seconds if row.sync_lag_seconds is not none else "-" }} s</td></tr>
<tr><th>sync error</th><td>{{ row.sync_error }}</td></tr>
{% for c in columns %}
<tr><th>{{ c.heading }}</th><td>{{ row.extra.get(c.field, "") }}</td></tr>
{% endfor %}
</table>
{% if failed %}<p class="error">Not available: {{ failed|join(", ") }}</p>{% endif %}
<h2>Recent failed calls</h2>
{% if failures %}
<table id="failures">
<thead><tr><th>when</th><th>call</th><th>node</th><th>error</th><th>request id</th></tr></thead>
<tbody>
{% for f in failures %}
<tr><td>{{ f.at }}</td><td>{{ f.name }}</td><td>{{ f.node }}</td><td>{{ f.message }}</td>
<td><a href="/trace/{{ f.trace_id|urlencode }}"><code>{{ f.trace_id }}</code></a></td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="muted" id="no-failures">None kept in this node's span store.</p>
{% endif %}
<p class="muted">Failed calls this node made or served for the hospital, newest first, from its
span store (kept span_retention_seconds); any request id can be pasted in the search box.</p>
{% endblock %}
"""

_TRACE = """{% extends "base.html" %}
{% block title %}Trace {{ request_id }}{% endblock %}
{% block body %}
<p><a href="/">All hospitals</a></p>
<h1>Request <code id="trace-id">{{ tree.trace_id if tree else request_id }}</code></h1>
{% if error %}
<p class="error" id="trace-error">{{ error }}</p>
{% else %}
<p id="trace-summary">Started {{ tree.started.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] }}Z,
{{ "%.1f"|format(tree.total_ms) }} ms, {{ tree.hops|length }} hops
{% if hospitals %}— hospital{{ "s" if hospitals|length > 1 }}
{% for h in hospitals %}<a href="/hospital/{{ h|urlencode }}">{{ h }}</a>{{ ", " if not loop.last }}
{% endfor %}{% endif %}</p>
{% if tree.culprit %}
<p class="error" id="trace-failed">Failed at <b>{{ tree.culprit.name }}</b>
on <b>{{ tree.culprit.node }}</b> ({{ tree.culprit.tier }}): {{ tree.culprit.code }}
{%- if tree.culprit.detail %}: {{ tree.culprit.detail }}{% endif %}</p>
{% else %}
<p id="trace-ok">Every hop succeeded.</p>
{% endif %}
{% if tree.incomplete %}
<p class="error" id="trace-incomplete">Incomplete: {{ tree.incomplete }}.</p>
{% endif %}
<table class="trace" id="trace">
<thead><tr><th>hop</th><th>kind</th><th>where</th><th>start</th><th>took</th><th>status</th>
<th>timeline</th></tr></thead>
<tbody>
{% for h in tree.hops %}
<tr class="hop{{ ' culprit' if h.culprit }}" data-span="{{ h.span.span_id }}"
 data-tier="{{ h.tier }}" data-node="{{ h.node }}" data-depth="{{ h.depth }}">
<td class="hop" style="padding-left: {{ 0.7 + h.depth * 1.2 }}em">{{ h.name }}
{% if h.span.attributes %}<details><summary class="muted">{{ h.span.attributes|length }}
attribute{{ "s" if h.span.attributes|length != 1 }}</summary>
{% for k, v in h.span.attributes|dictsort %}<div><code>{{ k }}</code> = {{ v }}</div>{% endfor %}
</details>{% endif %}</td>
<td>{{ h.kind }}</td>
<td class="where"><span class="tier">{{ h.tier }}</span> {{ h.node }}</td>
<td class="num">+{{ "%.1f"|format(h.offset_ms) }} ms</td>
<td class="num">{{ "%.1f"|format(h.duration_ms) }} ms</td>
<td class="status">{{ h.code }}{% if h.detail %}: {{ h.detail }}{% endif %}
{% if h.span.owner %}<span class="muted">(owner {{ h.span.owner }})</span>{% endif %}
{% if h.culprit %}<b class="failed-here">⟸ failed here</b>{% endif %}</td>
<td class="bar"><div><span style="left: {{ '%.2f'|format(100 * h.offset_ms / tree.total_ms
 if tree.total_ms else 0) }}%; width: {{ '%.2f'|format(100 * h.duration_ms / tree.total_ms
 if tree.total_ms else 100) }}%"></span></div></td>
</tr>
{% endfor %}
</tbody>
</table>
<p class="muted">The same tree as <code>hplus trace {{ tree.trace_id }}</code>;
JSON at <a href="/api/trace/{{ tree.trace_id }}">/api/trace/{{ tree.trace_id }}</a>.</p>
{% endif %}
{% endblock %}
"""

_MISSING = """{% extends "base.html" %}
{% block title %}Unknown hospital{% endblock %}
{% block body %}
<p><a href="/">All hospitals</a></p>
<p class="error">No hospital {{ hospital_id }} is known to this node.</p>
{% endblock %}
"""

TEMPLATES = {
    "base.html": _BASE,
    "login.html": _LOGIN,
    "overview.html": _OVERVIEW,
    "hospital.html": _HOSPITAL,
    "missing.html": _MISSING,
    "trace.html": _TRACE,
}
