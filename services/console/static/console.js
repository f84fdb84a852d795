// The operator console's little script: sign-in, the live stream, dead-letter actions.
// Same-origin requests carry the HttpOnly session cookie; writes add X-Console: 1.
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const tz = "Asia/Ho_Chi_Minh";
  // dd/mm/yyyy HH:MM:SS in Asia/Ho_Chi_Minh, as the server renders it
  const fmt = (iso) => {
    const parts = {};
    new Intl.DateTimeFormat("en-GB", {
      timeZone: tz, hour12: false, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    }).formatToParts(new Date(iso)).forEach((p) => { parts[p.type] = p.value; });
    return `${parts.day}/${parts.month}/${parts.year} ${parts.hour}:${parts.minute}:${parts.second}`;
  };

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "X-Console": "1" },
      body: JSON.stringify(body || {}),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const errs = (data && data.errors) || [];
      const why = errs.map((e) => (e.field ? e.field + ": " : "") + e.reason).join("; ");
      throw new Error((data && data.detail ? data.detail : r.status) + (why ? " — " + why : ""));
    }
    return data;
  }

  // --- sign-in --------------------------------------------------------------------
  // Where to go once signed in: a path of this origin only (the server checks data-next
  // too), never a script URL or another host ("//evil", "/\\evil", "https://...").
  const safeNext = (value) => {
    const v = String(value || "/");
    if (!/^\/(?![\/\\])/.test(v) || /[\\\u0000-\u0020\u007f]/.test(v)) return "/";
    try {
      const u = new URL(v, location.origin);
      // the whole URL, on this origin: a path alone could resolve to "//host" again
      if (u.origin === location.origin) return u.href;
    } catch (e) { /* not a URL: go home */ }
    return "/";
  };
  const login = $("#login");
  if (login) {
    login.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await post("/login", { token: $("#token").value.trim() });
        location.assign(safeNext(login.dataset.next));
      } catch (e) {
        const el = $("#login-error"); el.textContent = "Không đăng nhập được: " + e.message; el.hidden = false;
      }
    });
  }
  const dev = $("#login-dev");
  if (dev) {
    dev.addEventListener("click", async () => {
      await post("/login/dev", {});
      location.assign(safeNext(dev.dataset.next));
    });
  }
  const logout = $("#logout");
  if (logout) logout.addEventListener("click", async () => { await post("/logout", {}); location.href = "/login"; });

  // --- the live stream --------------------------------------------------------------
  const table = $("#events[data-after]");
  if (table) {
    const tbody = table.querySelector("tbody");
    let last = Number(table.dataset.after || 0);
    let source = null;
    let paused = false;
    const params = () => {
      const p = new URLSearchParams();
      for (const k of ["type", "agency", "dossier"]) if (table.dataset[k]) p.set(k, table.dataset[k]);
      p.set("after", String(last));
      return p;
    };
    const cell = (text, html) => { const td = document.createElement("td"); if (html) td.appendChild(html); else td.textContent = text; return td; };
    const row = (e) => {
      const tr = document.createElement("tr");
      tr.className = "fresh"; tr.dataset.seq = e.seq; tr.dataset.type = e.type;
      const code = document.createElement("code"); code.textContent = e.type;
      let dossier = null;
      if (e.dossier_code) { dossier = document.createElement("a"); dossier.href = "/dossiers/" + e.dossier_code; dossier.textContent = e.dossier_code; }
      tr.append(cell(e.seq), cell(fmt(e.occurred_at)), cell("", code), dossier ? cell("", dossier) : cell(e.subject),
        cell(e.producer), cell(e.topic + " [" + e.partition + "] @" + e.offset));
      return tr;
    };
    const open = () => {
      source = new EventSource("/v1/console/stream?" + params().toString());
      source.addEventListener("event", (m) => {
        const e = JSON.parse(m.data);
        last = Math.max(last, e.seq);
        tbody.prepend(row(e));
        while (tbody.rows.length > 500) tbody.deleteRow(-1);
      });
      source.onerror = () => { $("#live-state").textContent = "Đang kết nối lại…"; };
      source.onopen = () => { $("#live-state").textContent = "Đang nhận"; };
    };
    const button = $("#pause");
    button.addEventListener("click", () => {
      paused = !paused;
      button.setAttribute("aria-pressed", String(paused));
      if (paused) {
        if (source) source.close();
        button.textContent = "Tiếp tục";
        $("#live-state").textContent = "Đã tạm dừng"; $("#live-state").className = "pill paused";
      } else {
        button.textContent = "Tạm dừng";
        $("#live-state").textContent = "Đang nhận"; $("#live-state").className = "pill live";
        open(); // resumes after the last event shown: nothing is missed
      }
    });
    open();
  }

  // --- dead-letter actions ------------------------------------------------------------
  const actions = $("#actions");
  if (actions) {
    const id = actions.dataset.id;
    const edit = $("#edit"); // absent when the dead letter cannot be replayed
    if (edit) edit.addEventListener("change", () => {
      $("#fixed").hidden = !edit.checked;
      const hint = $("#fixed-hint"); if (hint) hint.hidden = !edit.checked;
    });
    const fail = (e) => { const el = $("#action-error"); el.textContent = e.message; el.hidden = false; };
    const replay = $("#replay");
    if (replay) replay.addEventListener("click", async () => {
      const body = { reason: $("#reason").value.trim() };
      try {
        if (edit && edit.checked) body.payload = JSON.parse($("#fixed").value);
        await post("/v1/console/dead-letters/" + id + "/replay", body);
        location.href = "/dead-letters/" + id;
      } catch (e) { fail(e); }
    });
    $("#discard").addEventListener("click", async () => {
      try {
        await post("/v1/console/dead-letters/" + id + "/discard", { reason: $("#reason").value.trim() });
        location.href = "/dead-letters/" + id;
      } catch (e) { fail(e); }
    });
  }
})();
