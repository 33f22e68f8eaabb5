-- spec/observer_web_spec.lua: genserver.observer.serve, the observer's views
-- as a web page on genserver.tcp (DESIGN.md §2.12).
--
-- Run: make test SPECS=spec/observer_web_spec.lua   (under GENSERVER_WORKERS=1 and 4)
-- The HTTP client is genserver.tcp on the main script's thread, with
-- bounded connect/recv time-outs. The Chromium check runs Debian's
-- `chromium --headless --dump-dom` under `timeout` from the main script: the
-- main script is a foreign thread, so blocking it in io.popen holds no worker
-- and the observer's processes go on serving, even under one worker. When
-- chromium is missing that test is pending, except under CI=true (where
-- .ci/run installs it), where it fails.

local U = require "pr_util"
local gs = require "genserver"
local process = require "genserver.process"
local supervisor = require "genserver.supervisor"
local observer = require "genserver.observer"
local web = require "genserver.observer_web"
local tcp = require "genserver.tcp"

local T = U.TIMEOUT

-- Sends `raw` to port, returns the whole answer (the server closes).
local function http_raw(port, raw)
  local s = assert(tcp.connect("127.0.0.1", port, { active = false }, T))
  if raw ~= "" then assert(tcp.send(s, raw)) end
  local parts = {}
  while true do
    local d, err = tcp.recv(s, 0, T)
    if not d then
      assert(err == "closed", "recv: " .. tostring(err))
      break
    end
    parts[#parts + 1] = d
  end
  tcp.close(s)
  return table.concat(parts)
end

-- GET path: status, headers (lower-case names), body.
local function parse(resp)
  local head, body = resp:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no header end in: " .. resp:sub(1, 200))
  local status = tonumber(head:match("^HTTP/1%.1 (%d%d%d) "))
  local headers = {}
  for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[k:lower()] = v end
  return status, headers, body
end

local function get(port, path)
  return parse(http_raw(port, "GET " .. path .. " HTTP/1.1\r\nHost: localhost\r\n\r\n"))
end

-- a process that keeps `n` messages queued until told "go"
local function hoarder(n)
  local pid = process.spawn(function()
    require("genserver.process").receive(function(m) return m == "go" end)
  end)
  for i = 1, n do process.send(pid, { "x", i }) end
  for _ = 1, 500 do
    local info = process.info(pid)
    if info and info.mailbox == n then return pid end
    process.sleep(2)
  end
  error("the hoarder's mailbox never reached " .. n)
end

local Named = { handle_call = function(_, _, s) return "reply", s, s end }

local function sh(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

describe("genserver.observer.serve", function()
  local cleanup = {}
  local handle, port

  before_each(function()
    U.flush()
    handle, port = observer.serve { port = 0 }
    assert(handle, port)
  end)

  after_each(function()
    if handle and process.alive(handle) then observer.stop(handle) end
    for _, pid in ipairs(cleanup) do
      if process.alive(pid) then process.exit(pid, "kill") end
    end
    cleanup = {}
  end)

  it("listens on loopback on the port it returns", function()
    assert.is_true(process.is_pid(handle))
    assert.is_true(math.type(port) == "integer" and port > 0)
    local s = assert(tcp.connect("127.0.0.1", port, { active = false }, T))
    local addr = tcp.peername(s)
    tcp.close(s)
    assert.are.equal(port, addr.port)
  end)

  it("/api/processes lists a named server with its mailbox and memory", function()
    local server = assert(gs.start(Named, 1, { name = "web_obs_named" }))
    cleanup[#cleanup + 1] = server
    local h = hoarder(4)
    cleanup[#cleanup + 1] = h
    local status, headers, body = get(port, "/api/processes")
    assert.are.equal(200, status)
    assert.are.equal("application/json; charset=utf-8", headers["content-type"])
    assert.are.equal(#body, tonumber(headers["content-length"]))
    assert.are.equal("close", headers["connection"])
    -- the named server's record, pid as a string
    local rec = body:match('{[^{}]-"name":"web_obs_named"[^{}]-}')
    assert.is_string(rec, body)
    assert.is_truthy(rec:find('"pid":"' .. tostring(server) .. '"', 1, true), rec)
    assert.is_truthy(rec:find('"mailbox":0', 1, true), rec)
    local mem = tonumber(rec:match('"memory":(%d+)'))
    assert.is_true(mem ~= nil and mem > 0, rec)
    -- the hoarder's mailbox
    local hrec = body:match('{[^{}]-"pid":"' .. tostring(h):gsub("%p", "%%%0") .. '"[^{}]-}')
    assert.is_string(hrec, body)
    assert.is_truthy(hrec:find('"mailbox":4', 1, true), hrec)
    assert.is_truthy(hrec:find('"rate":%d+'), hrec)
  end)

  it("/api/top sorts by the column asked, largest first, and refuses an unknown one", function()
    local h = hoarder(50)
    cleanup[#cleanup + 1] = h
    local status, _, body = get(port, "/api/top?sort=mailbox&limit=1")
    assert.are.equal(200, status)
    assert.is_truthy(body:match('^%[{[^{}]-"pid":"' .. tostring(h):gsub("%p", "%%%0") .. '"'), body)
    assert.is_truthy(body:find('"mailbox":50', 1, true), body)
    assert.is_nil(body:find("},{", 1, true), "limit=1 gave more than one row")
    status, _, body = get(port, "/api/top?sort=memory")
    assert.are.equal(200, status)
    local mems = {}
    for m in body:gmatch('"memory":(%d+)') do mems[#mems + 1] = tonumber(m) end
    assert.is_true(#mems >= 3, body)
    for i = 2, #mems do assert.is_true(mems[i - 1] >= mems[i], body) end
    status, _, body = get(port, "/api/top?sort=colour")
    assert.are.equal(400, status)
    assert.is_truthy(body:find("sort must be", 1, true), body)
  end)

  it("/api/tree gives the supervision trees", function()
    local sup = assert(supervisor.start({
      strategy = "one_for_one",
      children = { { id = "webkid", start = { Named, 1, { name = "web_obs_kid" } } } },
    }))
    cleanup[#cleanup + 1] = sup
    local status, _, body = get(port, "/api/tree")
    assert.are.equal(200, status)
    assert.is_truthy(body:find('"pid":"' .. tostring(sup) .. '"', 1, true), body)
    assert.is_truthy(body:find('"type":"supervisor"', 1, true), body)
    assert.is_truthy(body:find('"children":[{', 1, true), body)
    assert.is_truthy(body:find('"id":"webkid"', 1, true), body)
    assert.is_truthy(body:find('"name":"web_obs_kid"', 1, true), body)
  end)

  it("/ is an HTML page with its script inline, no external asset", function()
    local status, headers, body = get(port, "/")
    assert.are.equal(200, status)
    assert.are.equal("text/html; charset=utf-8", headers["content-type"])
    assert.is_truthy(body:find("<script>", 1, true))
    assert.is_truthy(body:find("/api/processes", 1, true))
    assert.is_nil(body:find("src=", 1, true))
    assert.is_nil(body:find("http://", 1, true))
    assert.is_nil(body:find("https://", 1, true))
  end)

  it("answers 404 for an unknown path and 405 for another method", function()
    local status, _, body = get(port, "/nowhere")
    assert.are.equal(404, status)
    assert.is_truthy(body:find('"error"', 1, true))
    status = parse(http_raw(port, "POST /api/processes HTTP/1.1\r\nContent-Length: 0\r\n\r\n"))
    assert.are.equal(405, status)
    local _, headers = parse(http_raw(port, "DELETE / HTTP/1.1\r\n\r\n"))
    assert.are.equal("GET", headers["allow"])
  end)

  it("answers 400 to malformed requests and stays up", function()
    for _, raw in ipairs({
      "garbage\r\n\r\n",
      "GET\r\n\r\n",
      "GET / HTTP/9.9\r\n\r\n",
      "GET nopath HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
      "\0\1\2\255\254\r\n\r\n",
    }) do
      local status = parse(http_raw(port, raw))
      assert.are.equal(400, status, ("%q"):format(raw))
    end
    assert.is_true(process.alive(handle))
    local status, _, body = get(port, "/api/processes")
    assert.are.equal(200, status)
    assert.is_truthy(body:find('"pid":"' .. tostring(handle) .. '"', 1, true), body)
  end)

  it("bounds the request head (431) and the time a client has to send it (408)", function()
    local status = parse(http_raw(port, "GET /" .. ("a"):rep(20000) .. " HTTP/1.1\r\n\r\n"))
    assert.are.equal(431, status)
    local status2 = parse(http_raw(port, "GET / HTTP/1.1\r\nX: " .. ("b"):rep(9000)))
    assert.are.equal(431, status2)
    -- a separate observer with a short read time-out: a silent client gets 408
    local h2, p2 = assert(observer.serve { port = 0, timeout = 100 })
    local ok, err = pcall(function()
      local s = assert(tcp.connect("127.0.0.1", p2, { active = false }, T))
      local d = tcp.recv(s, 0, T)
      tcp.close(s)
      assert.is_string(d)
      assert.are.equal(408, (parse(d)))
    end)
    observer.stop(h2)
    if not ok then error(err, 0) end
    assert.are.equal(200, (get(port, "/api/tree")))
  end)

  it("a client that vanishes mid-request does not hurt it", function()
    for _ = 1, 5 do
      local s = assert(tcp.connect("127.0.0.1", port, { active = false }, T))
      tcp.send(s, "GET /api/pro")
      tcp.close(s)
    end
    assert.is_true(process.alive(handle))
    assert.are.equal(200, (get(port, "/api/processes")))
  end)

  it("replaces an acceptor that dies", function()
    local acceptors = process.info(handle).monitors
    assert.are.equal(2, #acceptors)
    local mref = process.monitor(acceptors[1])
    process.exit(acceptors[1], "kill")
    U.await_down(mref)
    local now
    for _ = 1, 500 do
      now = process.info(handle).monitors
      if #now == 2 and now[1] ~= acceptors[1] and now[2] ~= acceptors[1] then break end
      process.sleep(5)
    end
    assert.are.equal(2, #now)
    assert.are_not.equal(acceptors[1], now[1])
    assert.are_not.equal(acceptors[1], now[2])
    for _ = 1, 4 do assert.are.equal(200, (get(port, "/api/tree"))) end
  end)

  it("runs as a supervisor's child and is restarted with it", function()
    local sup = assert(supervisor.start({
      strategy = "one_for_one",
      children = { { id = "web", start = { "genserver.observer_web", { port = 0 },
                                           { name = "web_obs_child" } } } },
    }))
    cleanup[#cleanup + 1] = sup
    local web1 = process.whereis("web_obs_child")
    local p1 = web.port("web_obs_child")
    assert.are.equal(200, (get(p1, "/api/processes")))
    local status, _, body = get(p1, "/api/tree")
    assert.are.equal(200, status)
    assert.is_truthy(body:find('"id":"web"', 1, true), body)
    -- port 0 again on restart: another free port, served as well
    local mref = process.monitor(web1)
    process.exit(web1, "kill")
    U.await_down(mref)
    local web2
    for _ = 1, 500 do
      web2 = process.whereis("web_obs_child")
      if web2 and web2 ~= web1 then break end
      process.sleep(5)
    end
    assert.is_true(web2 ~= nil and web2 ~= web1)
    assert.are.equal(200, (get(web.port(web2), "/api/processes")))
    assert.has_error(function() web.port(web1) end)
  end)

  it("stop closes the port: a connection is refused", function()
    local acceptors = process.info(handle).monitors
    assert.is_true(observer.stop(handle))
    assert.is_false(process.alive(handle))
    -- its acceptors end with the listening socket
    for _, a in ipairs(acceptors) do
      local mref = process.monitor(a)
      U.await_down(mref)
    end
    local s, err = tcp.connect("127.0.0.1", port, nil, T)
    if s then tcp.close(s) end
    assert.is_nil(s)
    assert.are.equal("econnrefused", err)
    assert.is_false(observer.stop(handle))
  end)

  it("killing the pid closes the port too", function()
    local mref = process.monitor(handle)
    process.exit(handle, "kill")
    U.await_down(mref)
    -- the socket is closed by the loop thread once its owner is gone
    local s, err
    for _ = 1, 500 do
      s, err = tcp.connect("127.0.0.1", port, nil, T)
      if not s then break end
      tcp.close(s)
      process.sleep(5)
    end
    assert.is_nil(s)
    assert.are.equal("econnrefused", err)
  end)

  it("a port in use is nil, eaddrinuse; bad options raise", function()
    local h2, err = observer.serve { port = port }
    assert.is_nil(h2)
    assert.are.equal("eaddrinuse", err)
    assert.has_error(function() observer.serve { port = -1 } end,
      "genserver.observer.serve: port must be an integer 0..65535")
    assert.has_error(function() observer.serve { port = 1.5 } end,
      "genserver.observer.serve: port must be an integer 0..65535")
    assert.has_error(function() observer.serve { ip = 7 } end,
      "genserver.observer.serve: ip must be a string")
    assert.has_error(function() observer.serve "x" end,
      "genserver.observer.serve: opts must be a table")
    assert.has_error(function() observer.serve { acceptors = 0 } end,
      "genserver.observer.serve: acceptors must be an integer 1..64")
    -- as a supervisor's child, bad options stop it in init with the same reason
    local pid, why = gs.start("genserver.observer_web", { timeout = "soon" })
    assert.is_nil(pid)
    assert.are.equal("genserver.observer.serve: timeout must be ms > 0", why)
  end)

  it("renders the process table in headless Chromium (its script ran)", function()
    local chromium
    for _, c in ipairs({ "chromium", "chromium-browser" }) do
      if os.execute("command -v " .. c .. " >/dev/null 2>&1") then chromium = c break end
    end
    if not chromium then
      if os.getenv("CI") == "true" then
        error("chromium is not installed (apt-get install chromium): .ci/run installs it")
      end
      pending("chromium is not installed (apt-get install chromium); required under CI=true")
      return
    end
    local server = assert(gs.start(Named, 1, { name = "web_obs_in_chromium" }))
    cleanup[#cleanup + 1] = server
    local dir = os.tmpname()
    os.remove(dir)
    -- the main script blocks here (a foreign thread: no worker is held)
    local cmd = ("mkdir -p %s && timeout -k 5 60 %s --headless --no-sandbox --disable-gpu"
      .. " --disable-quic --no-first-run --disable-background-networking"
      .. " --disable-component-update --disable-sync --disable-dev-shm-usage"
      .. " --user-data-dir=%s --virtual-time-budget=3000 --dump-dom http://127.0.0.1:%d/"
      .. " 2>%s/stderr; echo \"exit=$?\"; tail -n 5 %s/stderr; rm -rf %s")
      :format(sh(dir), chromium, sh(dir), port, sh(dir), sh(dir), sh(dir))
    local p = assert(io.popen(cmd, "r"))
    local dom = p:read("a")
    p:close()
    assert.is_truthy(dom:find("exit=0", 1, true), dom:sub(-2000))
    local rows = dom:match('<tbody id="rows">(.-)</tbody>')
    assert.is_string(rows, "no process table in the DOM:\n" .. dom:sub(1, 2000))
    assert.is_truthy(rows:find('<td class="l">web_obs_in_chromium</td>', 1, true),
      "the server's name is not in the rendered table:\n" .. rows)
    assert.is_truthy(rows:find(tostring(server):gsub("<", "&lt;"):gsub(">", "&gt;"), 1, true), rows)
  end)
end)

describe("genserver.observer_web.json", function()
  local json = web.json

  it("encodes scalars, arrays and objects (keys sorted)", function()
    assert.are.equal("null", json(nil))
    assert.are.equal("true", json(true))
    assert.are.equal("-12", json(-12))
    assert.are.equal("0.5", json(0.5))
    assert.are.equal("null", json(0 / 0))
    assert.are.equal("null", json(math.huge))
    assert.are.equal("[]", json({}))
    assert.are.equal('[1,"a",[true]]', json({ 1, "a", { true } }))
    assert.are.equal('{"1":"x","3":"y"}', json({ [1] = "x", [3] = "y" }))
    assert.are.equal('{"a":1,"b":[],"c":{"d":false}}', json({ b = {}, a = 1, c = { d = false } }))
  end)

  it("escapes strings as JSON requires", function()
    assert.are.equal([["a\"b\\c/d"]], json('a"b\\c/d'))
    assert.are.equal([["\n\r\t\b\f\u0000\u001f\u007f"]], json("\n\r\t\b\f\0\31\127"))
    assert.are.equal('"héllo ✓"', json("héllo ✓"))
    -- invalid UTF-8 is read as Latin-1: still valid JSON (UTF-8) text
    local s = json("a\255b\128")
    assert.are.equal('"aÿb\u{80}"', s)
    assert.is_truthy(utf8.len(s))
  end)

  it("prints pids and refs as strings and survives cycles", function()
    local me = process.self()
    assert.are.equal('"' .. tostring(me) .. '"', json(me))
    assert.are.equal('{"pid":"' .. tostring(me) .. '"}', json({ pid = me }))
    local t = { 1 }
    t[2] = t
    assert.are.equal("[1,null]", json(t))
  end)
end)

describe("genserver.observer without serve", function()
  it("does not load genserver.tcp", function()
    local ok, code, out = U.run_child([[
      require "genserver.observer"
      io.write(package.loaded["genserver.tcp"] and "tcp loaded" or "tcp not loaded")
    ]])
    assert.is_true(ok, out)
    assert.are.equal(0, code)
    assert.are.equal("tcp not loaded", out)
  end)
end)
