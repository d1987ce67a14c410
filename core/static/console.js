// Seat console: live updates over server-sent events, keyboard picks, autosave, draft decisions.
// No framework and no CDN: the console must work offline inside the centre's network.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var page = document.body.getAttribute("data-page");

  function toast(text, bad) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.className = "toast" + (bad ? " bad" : "");
    el.hidden = false;
    clearTimeout(el._t);
    el._t = setTimeout(function () { el.hidden = true; }, 5000);
  }

  function api(method, url, body) {
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (r) {
      if (r.status === 204) return {};
      return r.json().then(function (data) {
        if (!r.ok) {
          var err = new Error((data.error && data.error.message) || ("请求失败 " + r.status));
          err.id = data.error && data.error.id;
          throw err;
        }
        return data;
      });
    });
  }

  // ---- live events -------------------------------------------------------------------------
  var handlers = {};
  function on(topic, fn) { (handlers[topic] = handlers[topic] || []).push(fn); }
  function connect() {
    if (!window.EventSource) return;
    var dot = document.getElementById("live-status");
    var source = new EventSource("/api/events");
    source.onopen = function () { if (dot) dot.className = "live on"; };
    source.onerror = function () { if (dot) dot.className = "live off"; };
    ["draft.created", "draft.accepted", "draft.closed", "draft.claimed", "draft.released",
     "case.step_changed", "call.ringing", "call.connected", "call.ended", "seat.state"].forEach(function (topic) {
      source.addEventListener(topic, function (ev) {
        var data = {};
        try { data = JSON.parse(ev.data); } catch (e) { return; }
        (handlers[topic] || []).concat(handlers["*"] || []).forEach(function (fn) { fn(data, topic); });
      });
    });
  }

  // ---- inbox -------------------------------------------------------------------------------
  var refreshTimer = null;
  function refreshInbox() {
    var box = document.getElementById("inbox");
    if (!box) return;
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () {
      fetch("/inbox", { credentials: "same-origin" }).then(function (r) { return r.text(); })
        .then(function (html) { box.innerHTML = html; tickTimers(); });
    }, 150);
  }
  function tickTimers() {
    var now = Date.now();
    document.querySelectorAll(".timer[data-due]").forEach(function (el) {
      var left = Math.round((Date.parse(el.getAttribute("data-due")) - now) / 1000);
      el.textContent = left >= 0 ? ("剩余 " + Math.floor(left / 60) + "分" + (left % 60) + "秒")
                                 : ("超时 " + Math.floor(-left / 60) + "分");
      el.parentNode.parentNode.classList.toggle("overdue", left < 0 && !/处理中|已签收/.test(el.parentNode.nextElementSibling.textContent));
    });
  }

  // ---- call panel (screen pop) --------------------------------------------------------------
  function showCall(data, topic) {
    var box = document.getElementById("call-pop");
    if (!box) return;
    box.className = "call " + topic.replace(".", "-");
    box.textContent = "";
    var title = document.createElement("p");
    var label = { "call.ringing": "来电振铃", "call.connected": "通话中", "call.ended": "通话结束（整理）" }[topic];
    title.innerHTML = "<strong></strong> ";
    title.firstChild.textContent = label;
    title.appendChild(document.createTextNode((data.caller_masked || "") + " " + (data.citizen_name || "") +
      (data.queue ? " · " + data.queue : "")));
    box.appendChild(title);
    if (data.history && data.history.length) {
      var ul = document.createElement("ul");
      data.history.slice(0, 5).forEach(function (h) {
        var li = document.createElement("li");
        li.textContent = (h.at || "") + " " + (h.number || "") + " " + (h.status || "") + " " + (h.text || "");
        ul.appendChild(li);
      });
      box.appendChild(ul);
    }
    if (data.draft_id) {
      var a = document.createElement("a");
      a.href = "/drafts/" + encodeURIComponent(data.draft_id);
      a.textContent = "打开工单草稿";
      a.className = "button";
      box.appendChild(a);
    }
  }

  // ---- draft form ----------------------------------------------------------------------------
  function draftPage() {
    var root = document.getElementById("draft");
    if (!root) return;
    var id = root.getAttribute("data-draft");
    var open = root.getAttribute("data-open") === "yes";
    var form = document.getElementById("draft-form");
    var result = document.getElementById("result");
    if (open && root.getAttribute("data-mine") !== "yes") {
      api("POST", "/api/drafts/" + id + "/claim").catch(function (e) { toast(e.message, true); });
    }
    function fields() {
      var data = {};
      ["description", "address", "district", "lat", "lng", "case_type_code", "department"].forEach(function (n) {
        var el = form.elements[n];
        if (el) data[n] = el.value;
      });
      data.urgent = form.elements.urgent && form.elements.urgent.checked ? "1" : "";
      return data;
    }
    var saveTimer = null;
    form.addEventListener("input", function () {
      if (!open) return;
      clearTimeout(saveTimer);
      saveTimer = setTimeout(function () {
        api("POST", "/api/drafts/" + id + "/autosave", { form: fields() }).then(function () {
          document.getElementById("autosave-state").textContent = "已自动保存 " + new Date().toLocaleTimeString();
        }).catch(function (e) { document.getElementById("autosave-state").textContent = "保存失败：" + e.message; });
      }, 600);
    });
    function pick(code) {
      form.elements.case_type_code.value = code;
      form.elements.case_type_code.dispatchEvent(new Event("input", { bubbles: true }));
      document.querySelectorAll(".pick").forEach(function (b) {
        b.classList.toggle("picked", b.getAttribute("data-code") === code);
      });
    }
    document.querySelectorAll(".pick").forEach(function (b) {
      b.addEventListener("click", function () { pick(b.getAttribute("data-code")); });
    });
    document.addEventListener("keydown", function (ev) {
      var tag = (ev.target.tagName || "").toLowerCase();
      var typing = tag === "input" || tag === "textarea" || tag === "select";
      if (!typing && /^[1-3]$/.test(ev.key)) {
        var b = document.querySelector('.pick[data-key="' + ev.key + '"]');
        if (b) { pick(b.getAttribute("data-code")); ev.preventDefault(); }
      }
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); accept(); }
    });
    function number(v) { return v === "" ? null : Number(v); }
    function done(text) { result.textContent = text; result.className = "ok big"; open = false; }
    function fail(e) { result.textContent = e.message; result.className = "error"; }
    function waitForNumber(attempt) {
      api("GET", "/api/drafts/" + id).then(function (d) {
        if (d.case_number) {
          result.innerHTML = "已立案，案件号 <strong id=\"case-number\"></strong>";
          result.className = "ok big";
          document.getElementById("case-number").textContent = d.case_number;
        } else if (attempt < 40) {
          setTimeout(function () { waitForNumber(attempt + 1); }, 250);
        }
      });
    }
    function accept() {
      if (!open) return;
      var f = fields();
      if (!/^\d{5}$/.test(f.case_type_code)) { fail(new Error("请先选择案件类型（按 1/2/3 选择建议）")); return; }
      var body = { case_type_code: f.case_type_code, urgent: f.urgent === "1", description: f.description || null,
                   department: f.department || null,
                   location: { address: f.address || null, district: f.district || null,
                               lat: number(f.lat), lng: number(f.lng) } };
      api("POST", "/api/drafts/" + id + "/accept", body).then(function () {
        done("已立案，正在获取案件号…");
        waitForNumber(0);
      }).catch(fail);
    }
    function bind(idName, fn) { var el = document.getElementById(idName); if (el) el.addEventListener("click", fn); }
    bind("btn-accept", accept);
    bind("btn-reject", function () {
      api("POST", "/api/drafts/" + id + "/reject", { reason: document.getElementById("reject-reason").value })
        .then(function () { done("已不予立案"); }).catch(fail);
    });
    function merge(num) {
      api("POST", "/api/drafts/" + id + "/merge", { case_number: num }).then(function () { done("已合并到 " + num); })
        .catch(fail);
    }
    bind("btn-merge", function () { merge(document.getElementById("merge-number").value.trim()); });
    document.querySelectorAll(".merge-into").forEach(function (b) {
      b.addEventListener("click", function () { merge(b.getAttribute("data-number")); });
    });
    bind("btn-answer", function () {
      var text = form.elements.description.value || "咨询已答复";
      api("POST", "/api/drafts/" + id + "/answer", { answer: text }).then(function () { done("咨询已答复"); }).catch(fail);
    });
    bind("btn-release", function () {
      api("POST", "/api/drafts/" + id + "/release").then(function () { window.location.href = "/"; }).catch(fail);
    });
    bind("btn-reveal", function () {
      api("POST", "/api/drafts/" + id + "/reveal-phone").then(function (d) {
        document.getElementById("phone").textContent = d.phone || "无号码";
      }).catch(fail);
    });
  }

  // ---- dashboard -----------------------------------------------------------------------------
  function bars() {
    document.querySelectorAll(".bar span[data-pct]").forEach(function (el) {
      el.style.height = el.getAttribute("data-pct") + "%";
    });
  }
  function refreshDashboard() {
    api("GET", "/api/dashboard").then(function (s) {
      var set = function (idName, v) { var el = document.getElementById(idName); if (el) el.textContent = v; };
      set("kpi-received", s.totals.received);
      set("kpi-accepted", s.totals.accepted);
      set("kpi-rejected", s.totals.rejected);
      set("kpi-pending", s.totals.pending);
      set("kpi-overdue", s.overdue);
      set("dash-generated", s.generated);
      var top = document.getElementById("top10");
      if (top) {
        top.textContent = "";
        s.top10.forEach(function (t) {
          var li = document.createElement("li");
          li.textContent = t.name + " ";
          var b = document.createElement("strong");
          b.textContent = t.count;
          li.appendChild(b);
          top.appendChild(li);
        });
      }
      var peak = Math.max.apply(null, s.hourly.concat([1]));
      document.querySelectorAll("#hourly .bar span").forEach(function (el, i) {
        el.style.height = Math.round(s.hourly[i] * 100 / peak) + "%";
      });
    });
  }

  // ---- seat buttons --------------------------------------------------------------------------
  document.querySelectorAll("[data-seat]").forEach(function (b) {
    b.addEventListener("click", function () {
      var action = b.getAttribute("data-seat");
      var body = { reason: b.getAttribute("data-reason") || null };
      api("POST", "/api/hotline/seat/" + action, body).then(function (s) {
        var el = document.getElementById("seat-state");
        if (el && s.label) el.textContent = s.label;
      }).catch(function (e) { toast(e.message, true); });
    });
  });

  on("draft.created", refreshInbox);
  on("draft.accepted", refreshInbox);
  on("draft.closed", refreshInbox);
  on("draft.claimed", refreshInbox);
  on("draft.released", refreshInbox);
  on("call.ringing", showCall);
  on("call.connected", showCall);
  on("call.ended", showCall);
  on("seat.state", function (d) { var el = document.getElementById("seat-state"); if (el && d.label) el.textContent = d.label; });
  if (page === "dashboard") {
    bars();
    on("*", function () { clearTimeout(refreshTimer); refreshTimer = setTimeout(refreshDashboard, 300); });
    setInterval(refreshDashboard, 15000);
  }
  if (page === "workspace") setInterval(tickTimers, 1000);
  tickTimers();
  draftPage();
  connect();
})();
