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
</style>
</head>
<body>
{% block body %}{% endblock %}
</body>
</html>
"""

_LOGIN = """{% extends "base.html" %}
{% block title %}Sign in{% endblock %}
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
}
