--- genserver.observer_web: the observer's views as a live web page (DESIGN.md §2.12).
--
-- Used through `genserver.observer.serve` and `genserver.observer.stop`,
-- which load this module on first use (so `require "genserver.observer"`
-- does not load the I/O layer):
--
--     local observer = require "genserver.observer"
--     local pid, port = assert(observer.serve { port = 8080 })  -- 0: any free port
--     -- open http://127.0.0.1:8080/
--     observer.stop(pid)
--
-- Built on `genserver.tcp`, as three kinds of processes: the **web
-- process** (its pid is the handle), a gen_server whose callback module is
-- this one (so a supervisor can start it too), owns the listening socket and
-- keeps the last samples of the processes (for the message rates); a few **acceptors**
-- wait in `accept` on that socket; each connection gets its own **handler**
-- process, which reads one request, answers it and closes the connection.
-- A handler that crashes (a bug, bad input) takes only its connection with
-- it; an acceptor that dies is replaced by the web process; when the web
-- process ends (stop, or any exit signal) its listening socket closes and
-- the acceptors end with it.
--
-- Minimal HTTP/1.1: `GET` only (`405` otherwise), one request per
-- connection (`Connection: close`), a request head of at most
-- `max_request` bytes (`431` past it), `400` for anything malformed, `404`
-- for an unknown path. Routes:
--
-- * `/` an HTML page (no external assets) whose script polls the JSON
--   routes every second and renders the process table (click a column to
--   sort by it) and the supervision trees;
-- * `/api/processes` the processes (`observer.processes()`, with `rate`,
--   messages in per second), in pid order;
-- * `/api/top?sort=memory|mailbox|reductions|rate[&limit=n]` the same,
--   largest first;
-- * `/api/tree` the supervision trees (`observer.tree()`).
--
-- JSON: pids and references are strings (`"<0.5.1>"`).
-- @module genserver.observer_web

local process = require "genserver.process"
local tcp = require "genserver.tcp"

local M = {}

local type, tostring, pairs, ipairs, pcall = type, tostring, pairs, ipairs, pcall
local concat, sort, format, byte, char = table.concat, table.sort, string.format, string.byte, string.char
local math_type = math.type

-- ----------------------------------------------------------------- JSON

local ESC = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
              ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function esc_char(c)
  return ESC[c] or format("\\u%04x", byte(c))
end

local function json_string(s)
  -- invalid UTF-8 (a name is any Lua string) is read as Latin-1, so the
  -- output is always valid JSON text
  if not utf8.len(s) then
    s = s:gsub("[\128-\255]", function(c) return utf8.char(byte(c)) end)
  end
  -- control characters (and DEL), the quote and the backslash
  return '"' .. s:gsub('[%c"\\\127]', esc_char) .. '"'
end

local function is_array(t)
  local n = #t
  local count = 0
  for k in pairs(t) do
    if math_type(k) ~= "integer" or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n
end

local encode

local function encode_table(t, out, depth, seen)
  if seen[t] or depth > 64 then out[#out + 1] = "null" return end
  seen[t] = true
  if is_array(t) then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then out[#out + 1] = "," end
      encode(t[i], out, depth + 1, seen)
    end
    out[#out + 1] = "]"
  else
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    local strs = {}
    for i, k in ipairs(keys) do strs[i] = type(k) == "string" and k or tostring(k) end
    local order = {}
    for i = 1, #keys do order[i] = i end
    sort(order, function(a, b) return strs[a] < strs[b] end)
    out[#out + 1] = "{"
    for i, j in ipairs(order) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = json_string(strs[j])
      out[#out + 1] = ":"
      encode(t[keys[j]], out, depth + 1, seen)
    end
    out[#out + 1] = "}"
  end
  seen[t] = nil
end

encode = function(v, out, depth, seen)
  local tv = type(v)
  if v == nil then
    out[#out + 1] = "null"
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif tv == "number" then
    if math_type(v) == "integer" then
      out[#out + 1] = format("%d", v)
    elseif v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "null"
    else
      out[#out + 1] = format("%.17g", v)
    end
  elseif tv == "string" then
    out[#out + 1] = json_string(v)
  elseif tv == "table" then
    encode_table(v, out, depth, seen)
  else
    -- pids, references, functions...: their printed form
    out[#out + 1] = json_string(tostring(v))
  end
end

--- A Lua value as JSON text. Tables whose keys are exactly 1..n are arrays
-- (an empty table is `[]`), others objects (keys as strings, sorted); pids,
-- references and other values print as strings; NaN and infinities, cycles
-- and nesting deeper than 64 become `null`. Strings that are not UTF-8 are
-- read as Latin-1.
---@param v any
---@return string json
function M.json(v)
  local out = {}
  encode(v, out, 0, {})
  return concat(out)
end

-- ----------------------------------------------------------------- HTTP

local REASONS = {
  [200] = "OK", [400] = "Bad Request", [404] = "Not Found", [405] = "Method Not Allowed",
  [408] = "Request Timeout", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [503] = "Service Unavailable",
}

local function response(status, ctype, body, extra)
  local head = {
    format("HTTP/1.1 %d %s", status, REASONS[status] or "Error"),
    "Content-Type: " .. ctype,
    "Content-Length: " .. #body,
    "Cache-Control: no-store",
    "Connection: close",
  }
  if extra then head[#head + 1] = extra end
  return concat(head, "\r\n") .. "\r\n\r\n" .. body
end

local function json_response(status, v)
  return response(status, "application/json; charset=utf-8", M.json(v) .. "\n")
end

local function error_response(status, message, extra)
  return response(status, "application/json; charset=utf-8",
    M.json({ error = message }) .. "\n", extra)
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

local function parse_query(q)
  local t = {}
  if not q then return t end
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    t[unescape((k:gsub("+", " ")))] = unescape((v:gsub("+", " ")))
  end
  return t
end

local PAGE -- the HTML page, below

-- Pid order: by the numbers of "<a.b.c>", as process.list gives them.
local function pid_less(a, b)
  local sa, sb = tostring(a.pid), tostring(b.pid)
  local x1, x2, x3 = sa:match("<(%d+)%.(%d+)%.(%d+)>")
  local y1, y2, y3 = sb:match("<(%d+)%.(%d+)%.(%d+)>")
  if not (x1 and y1) then return sa < sb end
  x1, x2, x3, y1, y2, y3 = tonumber(x1), tonumber(x2), tonumber(x3), tonumber(y1), tonumber(y2), tonumber(y3)
  if x1 ~= y1 then return x1 < y1 end
  if x2 ~= y2 then return x2 < y2 end
  if x3 ~= y3 then return x3 < y3 end
  return false
end

-- Ask the web process for a sample (it keeps the previous one, for rates).
local function ask_sample(web, sort_by)
  local ok, r = pcall(require("genserver").call, web, { "sample", sort_by }, 5000)
  if not ok then return nil, "the observer did not answer: " .. tostring(r) end
  if type(r) ~= "table" or not r[1] then return nil, tostring(r and r[2]) end
  return r[2]
end

local function route(web, path, query)
  if path == "/" or path == "/index.html" then
    return response(200, "text/html; charset=utf-8", PAGE)
  elseif path == "/api/processes" then
    local list, err = ask_sample(web, nil)
    if not list then return error_response(503, err) end
    sort(list, pid_less)
    return json_response(200, list)
  elseif path == "/api/top" then
    local q = parse_query(query)
    local by = q.sort or "memory"
    if by ~= "memory" and by ~= "mailbox" and by ~= "reductions" and by ~= "rate" then
      return error_response(400, "sort must be memory, mailbox, reductions or rate")
    end
    local limit = math.huge
    if q.limit then
      limit = tonumber(q.limit)
      if not limit or limit < 0 or limit ~= limit // 1 then
        return error_response(400, "limit must be a whole number >= 0")
      end
    end
    local list, err = ask_sample(web, by)
    if not list then return error_response(503, err) end
    local out = {}
    for i = 1, math.min(#list, limit) do out[i] = list[i] end
    return json_response(200, out)
  elseif path == "/api/tree" then
    local ok, roots = pcall(require("genserver.observer").tree)
    if not ok then return error_response(500, tostring(roots)) end
    return json_response(200, roots)
  end
  return error_response(404, "no such page: " .. path)
end

-- The answer to one request head (the bytes before the blank line).
local function answer(web, head)
  local line = head:match("^([^\r\n]*)")
  local method, target, version = line:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
  if not method then return error_response(400, "malformed request line") end
  if version ~= "1.1" and version ~= "1.0" then
    return error_response(400, "unsupported HTTP version")
  end
  -- header lines: "Name: value" (no folding, no bare junk)
  for hl in head:gmatch("\r?\n([^\r\n]*)") do
    if hl ~= "" and not hl:match("^[%w!#$%%&'*+%.^_`|~-]+:") then
      return error_response(400, "malformed header line")
    end
  end
  if method ~= "GET" then return error_response(405, "only GET", "Allow: GET") end
  local path, query = target:match("^(/[^?#]*)%??([^#]*)")
  if not path then return error_response(400, "malformed request target") end
  return route(web, path, query ~= "" and query or nil)
end

-- One connection: read the request head (bounded in size and time), answer, close.
local function handle(web, s, opts)
  local buf, deadline = "", process.now() + opts.timeout
  local reply
  while true do
    local e = buf:find("\r\n\r\n", 1, true) or buf:find("\n\n", 1, true)
    if e then
      if e > opts.max_request then
        reply = error_response(431, "request head too large")
      else
        reply = answer(web, buf:sub(1, e - 1))
      end
      break
    end
    if #buf > opts.max_request then reply = error_response(431, "request head too large") break end
    local left = deadline - process.now()
    if left <= 0 then reply = error_response(408, "request timed out") break end
    local data, err = tcp.recv(s, 0, math.ceil(left))
    if not data then
      if err == "timeout" then reply = error_response(408, "request timed out") end
      break -- closed, or an error: nobody to answer
    end
    buf = buf .. data
  end
  if reply then tcp.send(s, reply) end
end

--- The body of a handler process (internal): waits for its socket, serves
-- one request, closes it.
---@param web userdata the web process
---@param opts table the server's options
function M._handler(web, opts)
  local m = process.receive(function(m)
    return type(m) == "table" and m[1] == "observer_web_own"
  end, 5000)
  if not m then return end
  local s = m[2]
  local ok, err = pcall(handle, web, s, opts)
  if not ok then
    -- a bug, or input nothing above foresaw: answer 500 if we still can
    pcall(tcp.send, s, error_response(500, tostring(err)))
  end
  tcp.close(s)
  if not ok then error(err, 0) end
end

--- The body of an acceptor process (internal): accepts connections until
-- the listening socket closes, each handed to a new handler process.
---@param ls userdata the listening socket
---@param web userdata the web process
---@param opts table the server's options
function M._acceptor(ls, web, opts)
  while true do
    local s, err = tcp.accept(ls)
    if not s then
      if err == "closed" then return end
      process.sleep(10) -- emfile and the like: do not spin
    else
      local h = process.spawn(function(w, o) require("genserver.observer_web")._handler(w, o) end,
                              web, opts)
      if tcp.controlling_process(s, h) then
        process.send(h, { "observer_web_own", s })
      else
        tcp.close(s)
      end
    end
  end
end

local function spawn_acceptor(ls, opts)
  local pid = process.spawn(function(l, w, o) require("genserver.observer_web")._acceptor(l, w, o) end,
                            ls, process.self(), opts)
  return process.monitor(pid)
end

-- The options of serve() (a LuaLS class).
---@class genserver.observer.ServeOptions
---@field port? integer the TCP port (default 0: a free one, see the second result)
---@field ip? string the address to bind (default "127.0.0.1": loopback only)
---@field acceptors? integer processes waiting in accept (default 2)
---@field max_request? integer bytes a request head may have (default 8192)
---@field timeout? integer ms a client has to send its request (default 5000)
---@field name? string a name to register the web process under

-- The options with their defaults, or nil and what is wrong.
local function check_opts(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then return nil, "opts must be a table" end
  local o = {
    port = opts.port or 0, ip = opts.ip or "127.0.0.1", acceptors = opts.acceptors or 2,
    max_request = opts.max_request or 8192, timeout = opts.timeout or 5000, name = opts.name,
  }
  if math_type(o.port) ~= "integer" or o.port < 0 or o.port > 65535 then
    return nil, "port must be an integer 0..65535"
  end
  if type(o.ip) ~= "string" then return nil, "ip must be a string" end
  if math_type(o.acceptors) ~= "integer" or o.acceptors < 1 or o.acceptors > 64 then
    return nil, "acceptors must be an integer 1..64"
  end
  if math_type(o.max_request) ~= "integer" or o.max_request < 64 then
    return nil, "max_request must be an integer >= 64"
  end
  if type(o.timeout) ~= "number" or o.timeout <= 0 then return nil, "timeout must be ms > 0" end
  if o.name ~= nil and type(o.name) ~= "string" then return nil, "name must be a string" end
  return o
end

-- ------------------------------------------- the web process: a gen_server

--- gen_server callback: listens and starts the acceptors. This module is
-- the web process's callback module, so it can also be a supervisor's
-- child: `{ id = "observer", start = { "genserver.observer_web", { port = 8080 } } }`
-- (then `observer_web.port(pid)` gives the port).
---@param opts genserver.observer.ServeOptions? the options (see `serve`)
---@return string "ok" | "stop"
---@return any state or reason
function M.init(opts)
  local o, bad = check_opts(opts)
  if not o then return "stop", "genserver.observer.serve: " .. bad end
  local ls, err = tcp.listen(o.port, { ip = o.ip, active = false, backlog = 128 })
  if not ls then return "stop", err end
  local st = { ls = ls, port = tcp.sockname(ls).port, opts = o, acceptors = {} }
  for _ = 1, o.acceptors do st.acceptors[spawn_acceptor(ls, o)] = true end
  return "ok", st
end

--- gen_server callback: `"port"`, and `{ "sample", sort }` (a sample of the
-- processes with rates, for the handlers).
---@param req any the request
---@param _from table the caller
---@param st table the state
---@return string "reply"
---@return any reply
---@return table state
function M.handle_call(req, _from, st)
  if req == "port" then return "reply", st.port, st end
  if type(req) == "table" and req[1] == "sample" then
    -- rates are measured against the newest kept sample at least half a
    -- second old (older: the one before newer; kept >= 500 ms apart)
    local ref_s = st.newer
    if st.newer and process.now() - st.newer.at < 500 and st.older then ref_s = st.older end
    local ok, s = pcall(require("genserver.observer").sample, ref_s, req[2] or "memory")
    if not ok then return "reply", { false, tostring(s) }, st end
    if not st.newer or s.at - st.newer.at >= 500 then st.older, st.newer = st.newer, s end
    return "reply", { true, s.list }, st
  end
  return "reply", nil, st
end

--- gen_server callback: replaces an acceptor that died (after 50 ms).
---@param msg any the message
---@param st table the state
---@return string "noreply"
---@return table state
function M.handle_info(msg, st)
  if type(msg) == "table" and msg[1] == "DOWN" and st.acceptors[msg.ref] then
    -- not for a closed listener: only this process closes it, in terminate
    st.acceptors[msg.ref] = nil
    process.send_after(50, process.self(), "observer_web_respawn")
  elseif msg == "observer_web_respawn" then
    st.acceptors[spawn_acceptor(st.ls, st.opts)] = true
  end
  return "noreply", st
end

--- gen_server callback: closes the listening socket (its acceptors end).
---@param _reason any
---@param st table the state
function M.terminate(_reason, st)
  tcp.close(st.ls)
end

-- ----------------------------------------------------------- the API

--- Serves the observer's views as a web page (see the module's header).
-- Returns once the port is listening.
---@param opts genserver.observer.ServeOptions? `{ port =, ip =, acceptors =, max_request =, timeout =, name = }`
---@return userdata|nil pid the web process (the handle for `stop`), or nil
---@return integer|any port the port it listens on, or why it could not ("eaddrinuse", ...)
function M.serve(opts)
  local o, bad = check_opts(opts)
  if not o then error("genserver.observer.serve: " .. bad, 2) end
  local gs = require "genserver"
  local pid, err = gs.start("genserver.observer_web", o, { name = o.name })
  if not pid then return nil, err end
  return pid, gs.call(pid, "port")
end

--- The port a web observer listens on.
---@param server userdata|string its pid or name
---@return integer port
function M.port(server)
  return require("genserver").call(server, "port")
end

--- Stops a web observer started by `serve`: closes its listening socket and
-- ends its processes (connections being answered finish). Returns once the
-- port is closed; true, or false if it was not running.
---@param server userdata|string the pid `serve` returned (or its registered name)
---@return boolean stopped
function M.stop(server)
  local gs = require "genserver"
  local pid = server
  if type(server) == "string" then pid = process.whereis(server) end
  if not process.is_pid(pid) or not process.alive(pid) then return false end
  local mref = process.monitor(pid)
  local ok = pcall(gs.stop, pid, "normal", 5000)
  if not ok then process.exit(pid, "kill") end -- its death closes the socket too
  local m = process.receive(function(m)
    return type(m) == "table" and m[1] == "DOWN" and m.ref == mref
  end, 5000)
  return m ~= nil and m.reason ~= "noproc"
end

PAGE = [==[
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>genserver observer</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { cursor: pointer; background: #f3f3f3; user-select: none; }
td.l, th.l { text-align: left; }
#status { color: #777; }
ul.tree, ul.tree ul { list-style: none; padding-left: 1.2em; margin: 0; }
ul.tree { padding-left: 0; }
.sup { font-weight: bold; }
</style></head>
<body>
<h1>genserver observer</h1>
<div id="status">loading…</div>
<h2>Processes</h2>
<table id="procs"><thead><tr id="heads"></tr></thead><tbody id="rows"></tbody></table>
<h2>Supervision trees</h2>
<div id="tree"></div>
<script>
"use strict";
var COLS = [
  ["pid", "PID", "l"], ["name", "NAME", "l"], ["module", "MODULE", "l"], ["status", "STATUS", "l"],
  ["memory", "MEMORY", ""], ["mailbox", "MAILBOX", ""], ["reductions", "REDUCTIONS", ""],
  ["rate", "MSG/S", ""], ["messages_in", "IN", ""], ["messages_out", "OUT", ""],
  ["current", "CURRENT", "l"]
];
var sortKey = "memory", sortDesc = true, last = [];
function pidKey(s) {
  var m = /<(\d+)\.(\d+)\.(\d+)>/.exec(String(s));
  return m ? [+m[1], +m[2], +m[3]] : [0, 0, 0];
}
function cmp(a, b) {
  var x = a[sortKey], y = b[sortKey], r;
  if (sortKey === "pid") {
    x = pidKey(x); y = pidKey(y);
    r = x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  } else if (typeof x === "number" || typeof y === "number") {
    r = (x || 0) - (y || 0);
  } else {
    r = String(x == null ? "" : x).localeCompare(String(y == null ? "" : y));
  }
  return sortDesc ? -r : r;
}
function text(v) { return v == null ? "-" : String(v); }
function human(n) {
  if (typeof n !== "number") return "-";
  if (n < 10240) return String(n);
  if (n < 10485760) return Math.round(n / 1024) + "K";
  return (n / 1048576).toFixed(1) + "M";
}
function renderHeads() {
  var tr = document.getElementById("heads");
  tr.textContent = "";
  COLS.forEach(function (c) {
    var th = document.createElement("th");
    th.className = c[2];
    th.textContent = c[1] + (c[0] === sortKey ? (sortDesc ? " ▼" : " ▲") : "");
    th.onclick = function () {
      if (sortKey === c[0]) sortDesc = !sortDesc;
      else { sortKey = c[0]; sortDesc = c[2] === ""; }
      renderHeads(); renderRows();
    };
    tr.appendChild(th);
  });
}
function renderRows() {
  var body = document.getElementById("rows");
  body.textContent = "";
  last.slice().sort(cmp).forEach(function (p) {
    var tr = document.createElement("tr");
    COLS.forEach(function (c) {
      var td = document.createElement("td");
      td.className = c[2];
      td.textContent = c[0] === "memory" ? human(p.memory) : text(p[c[0]]);
      tr.appendChild(td);
    });
    body.appendChild(tr);
  });
}
function renderTree(roots) {
  function node(n) {
    var li = document.createElement("li");
    var span = document.createElement("span");
    if (n.type === "supervisor") span.className = "sup";
    var label = text(n.pid);
    if (n.name) label += " " + n.name;
    if (n.id != null) label += " [" + n.id + "]";
    label += " " + (n.type === "supervisor" ? "supervisor" : text(n.module));
    span.textContent = label;
    li.appendChild(span);
    if (n.children && n.children.length) {
      var ul = document.createElement("ul");
      n.children.forEach(function (c) { ul.appendChild(node(c)); });
      li.appendChild(ul);
    }
    return li;
  }
  var div = document.getElementById("tree");
  div.textContent = "";
  if (!roots.length) { div.textContent = "(no supervisors)"; return; }
  var ul = document.createElement("ul");
  ul.className = "tree";
  roots.forEach(function (r) { ul.appendChild(node(r)); });
  div.appendChild(ul);
}
function get(url) {
  return fetch(url, { cache: "no-store" }).then(function (r) {
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  });
}
function poll() {
  Promise.all([get("/api/processes"), get("/api/tree")]).then(function (v) {
    last = v[0]; renderRows(); renderTree(v[1]);
    document.getElementById("status").textContent =
      v[0].length + " processes, updated " + new Date().toLocaleTimeString();
  }).catch(function (e) {
    document.getElementById("status").textContent = "not connected: " + e.message;
  }).then(function () { setTimeout(poll, 1000); });
}
renderHeads();
poll();
</script>
</body></html>
]==]

return M
