-- spec/tcp_spec.lua: genserver.tcp (DESIGN.md §1.8, §2.10) over loopback.
--
-- Run: make test SPECS=spec/tcp_spec.lua   (under GENSERVER_WORKERS=1 and 4)
-- Every wait is bounded (accept/recv/connect time-outs, receive time-outs),
-- so a broken socket fails a test instead of hanging the run; nothing here
-- measures time.

local U = require "pr_util"
local process = require "genserver.process"
local tcp = require "genserver.tcp"

local T = U.TIMEOUT

-- A listener on an ephemeral loopback port, and that port.
local function listener(opts)
  local ls = assert(tcp.listen(0, opts))
  return ls, tcp.sockname(ls).port
end

-- A connected pair: c (the client, main script's) and s (accepted by the main script).
local function pair(lopts, copts)
  local ls, port = listener(lopts)
  local c = assert(tcp.connect("127.0.0.1", port, copts, T))
  local s = assert(tcp.accept(ls, T))
  tcp.close(ls)
  return c, s
end

local function tcp_msg(kind, sock)
  return function(m)
    return type(m) == "table" and m[1] == kind and m.sock == sock
  end
end

describe("genserver.tcp", function()

  before_each(function() U.flush() end)

  describe("listen, connect, accept", function()
    it("binds loopback by default and gives addresses", function()
      local ls, port = listener()
      assert.is_true(tcp.is_socket(ls))
      assert.are.equal("127.0.0.1", tcp.sockname(ls).ip)
      local c = assert(tcp.connect("127.0.0.1", port, nil, T))
      local s = assert(tcp.accept(ls, T))
      assert.are.equal(port, tcp.peername(c).port)
      assert.are.equal(tcp.sockname(c).port, tcp.peername(s).port)
      assert.are_not.equal(c, s)
      tcp.close(c); tcp.close(s); tcp.close(ls)
    end)

    it("returns nil, \"econnrefused\" for a port nobody listens on", function()
      local ls, port = listener()
      tcp.close(ls)
      local c, err = tcp.connect("127.0.0.1", port, nil, T)
      assert.is_nil(c)
      assert.are.equal("econnrefused", err)
    end)

    it("returns nil, \"eaddrinuse\" for a port in use", function()
      local ls, port = listener()
      local ls2, err = tcp.listen(port)
      assert.is_nil(ls2)
      assert.are.equal("eaddrinuse", err)
      tcp.close(ls)
    end)

    it("times out an accept with nothing to accept", function()
      local ls = listener()
      local s, err = tcp.accept(ls, 20)
      assert.is_nil(s)
      assert.are.equal("timeout", err)
      tcp.close(ls)
    end)

    it("lets several processes accept on one listener, and wakes them with \"closed\"", function()
      local ls, port = listener()
      local me = process.self()
      for i = 1, 3 do
        process.spawn(function(ls, me, i)
          local tcp = require "genserver.tcp"
          local process = require "genserver.process"
          local s, err = tcp.accept(ls, 5000)
          process.send(me, { "accepted", i, s ~= nil, err })
        end, ls, me, i)
      end
      local c1 = assert(tcp.connect("127.0.0.1", port, nil, T))
      local m = U.await(function(m) return type(m) == "table" and m[1] == "accepted" end)
      assert.is_true(m[3])
      -- the other two are still waiting: closing the listener wakes them
      process.sleep(20)
      tcp.close(ls)
      for _ = 1, 2 do
        m = U.await(function(m) return type(m) == "table" and m[1] == "accepted" end)
        assert.is_false(m[3])
        assert.are.equal("closed", m[4])
      end
      tcp.close(c1)
    end)

    it("does not hand a connection to a waiter that died", function()
      local ls, port = listener()
      local pid = process.spawn(function(ls)
        local tcp = require "genserver.tcp"
        tcp.accept(ls, 10000)
      end, ls)
      process.sleep(20) -- let it wait first
      U.kill(pid)
      local c = assert(tcp.connect("127.0.0.1", port, nil, T))
      local s, err = tcp.accept(ls, T)
      assert.is_truthy(s, err)
      tcp.close(c); tcp.close(s); tcp.close(ls)
    end)

    it("gives accepted sockets the listener's options", function()
      local c, s = pair({ packet = "line", active = false }, { active = false })
      assert(tcp.send(c, "one\ntwo\n"))
      assert.are.equal("one\n", tcp.recv(s, 0, T))
      assert.are.equal("two\n", tcp.recv(s, 0, T))
      tcp.close(c); tcp.close(s)
    end)

    it("refuses bad arguments with a clear error", function()
      assert.has_error(function() tcp.send(42, "x") end)
      assert.has_error(function() tcp.listen(70000) end)
      assert.has_error(function() tcp.listen(0, { packet = 3 }) end)
      assert.has_error(function() tcp.listen(0, { active = "twice" }) end)
      assert.has_error(function() tcp.send(process.make_ref(), "x") end)
    end)
  end)

  describe("packet modes", function()
    it("raw: recv(s, n) waits for n bytes, recv(s, 0) takes what is there", function()
      local c, s = pair({ active = false }, { active = false })
      assert(tcp.send(c, "abc"))
      assert(tcp.send(c, "defgh"))
      assert.are.equal("abcdefg", tcp.recv(s, 7, T))
      assert.are.equal("h", tcp.recv(s, 0, T))
      tcp.close(c); tcp.close(s)
    end)

    it("line: one packet per line, the \"\\n\" kept, lines joined across sends", function()
      local c, s = pair({ active = false, packet = "line" }, { active = false })
      assert(tcp.send(c, "hel"))
      assert(tcp.send(c, "lo\nwor"))
      assert(tcp.send(c, "ld\n"))
      assert.are.equal("hello\n", tcp.recv(s, 0, T))
      assert.are.equal("world\n", tcp.recv(s, 0, T))
      tcp.close(c); tcp.close(s)
    end)

    for _, n in ipairs({ 1, 2, 4 }) do
      it(("%d-byte big-endian length prefixes, both ways"):format(n), function()
        -- c frames, s reads raw: the wire has the header
        local c, s = pair({ active = false }, { active = false, packet = n })
        assert(tcp.send(c, "hello"))
        local want = string.rep("\0", n - 1) .. "\5hello"
        assert.are.equal(want, tcp.recv(s, #want, T))
        -- s writes a frame by hand in two pieces; c gets one whole packet
        local body = string.rep("x", 200)
        local hdr = string.pack(">I" .. n, #body)
        assert(tcp.send(s, hdr .. body:sub(1, 50)))
        assert(tcp.send(s, body:sub(51)))
        assert.are.equal(body, tcp.recv(c, 0, T))
        tcp.close(c); tcp.close(s)
      end)
    end

    it("refuses to send a packet too long for its prefix", function()
      local c, s = pair({ active = false }, { packet = 1, active = false })
      -- refused; the socket stays usable
      local ok, err = tcp.send(c, string.rep("x", 300))
      assert.is_nil(ok)
      assert.are.equal("emsgsize", err)
      assert(tcp.send(c, "ok"))
      assert.are.equal("\2ok", tcp.recv(s, 3, T))
      tcp.close(c); tcp.close(s)
    end)

    it("ends an active socket whose packet exceeds packet_size with tcp_error emsgsize", function()
      local c, s = pair({ packet = 2, packet_size = 10 }, nil)
      assert(tcp.send(c, string.pack(">I2", 11) .. string.rep("y", 11)))
      local e = U.await(tcp_msg("tcp_error", s))
      assert.are.equal("emsgsize", e.reason)
      U.await(tcp_msg("tcp_closed", s))
      local ok, err = tcp.send(s, "x")
      assert.is_nil(ok)
      assert.is_string(err)
      tcp.close(c)
    end)

    it("fails a passive recv of an over-long line with emsgsize", function()
      local c, s = pair({ packet = "line", packet_size = 8, active = false }, nil)
      assert(tcp.send(c, "0123456789abcdef"))
      local d, err = tcp.recv(s, 0, T)
      assert.is_nil(d)
      assert.are.equal("emsgsize", err)
      tcp.close(c)
    end)
  end)

  describe("active modes", function()
    it("active = true delivers { \"tcp\", sock = s, data = d } and tcp_closed", function()
      local c, s = pair({ packet = "line" }, nil)
      assert(tcp.send(c, "a\nb\n"))
      assert.are.equal("a\n", U.await(tcp_msg("tcp", s)).data)
      assert.are.equal("b\n", U.await(tcp_msg("tcp", s)).data)
      tcp.close(c)
      U.await(tcp_msg("tcp_closed", s))
    end)

    it("active = \"once\" delivers one packet, then nothing until set again", function()
      local c, s = pair({ packet = "line", active = "once" }, nil)
      assert(tcp.send(c, "1\n2\n3\n"))
      assert.are.equal("1\n", U.await(tcp_msg("tcp", s)).data)
      assert.is_nil(process.receive(tcp_msg("tcp", s), 50))
      assert.is_nil(process.receive(tcp_msg("tcp_passive", s), 0))
      assert(tcp.setopts(s, { active = "once" }))
      assert.are.equal("2\n", U.await(tcp_msg("tcp", s)).data)
      assert(tcp.setopts(s, { active = false }))
      assert.are.equal("3\n", tcp.recv(s, 0, T))
      tcp.close(c); tcp.close(s)
    end)

    it("active = n delivers n packets, then tcp_passive", function()
      local c, s = pair({ packet = "line", active = 2 }, nil)
      assert(tcp.send(c, "1\n2\n3\n"))
      assert.are.equal("1\n", U.await(tcp_msg("tcp", s)).data)
      assert.are.equal("2\n", U.await(tcp_msg("tcp", s)).data)
      U.await(tcp_msg("tcp_passive", s))
      assert.is_nil(process.receive(tcp_msg("tcp", s), 50))
      assert(tcp.setopts(s, { active = 1 }))
      assert.are.equal("3\n", U.await(tcp_msg("tcp", s)).data)
      U.await(tcp_msg("tcp_passive", s))
      tcp.close(c); tcp.close(s)
    end)

    it("active = false: recv times out, and data after the time-out are not lost", function()
      local c, s = pair({ active = false }, nil)
      local d, err = tcp.recv(s, 0, 20)
      assert.is_nil(d)
      assert.are.equal("timeout", err)
      d, err = tcp.recv(s, 0, 0)
      assert.are.equal("timeout", err)
      assert(tcp.send(c, "late"))
      assert.are.equal("late", tcp.recv(s, 4, T))
      tcp.close(c)
      d, err = tcp.recv(s, 0, T)
      assert.is_nil(d)
      assert.are.equal("closed", err)
      tcp.close(s)
    end)

    it("recv on an active socket is nil, \"einval\"", function()
      local c, s = pair(nil, nil)
      local d, err = tcp.recv(s, 0, 10)
      assert.is_nil(d)
      assert.are.equal("einval", err)
      tcp.close(c); tcp.close(s)
    end)

    it("active = true stops reading while the owner's mailbox is full (credit)", function()
      local ls, port = listener({ packet = "line" })
      local me = process.self()
      local owner = process.spawn(function(ls, me)
        local tcp = require "genserver.tcp"
        local process = require "genserver.process"
        local s = assert(tcp.accept(ls, 5000))
        process.send(me, "accepted")
        process.receive(function(m) return m == "go" end, 10000)
        local n, last = 0, 0
        while n < 2000 do
          local m = process.receive(function(m) return type(m) == "table" and m[1] == "tcp" end, 5000)
          if not m then break end
          n = n + 1
          local i = tonumber(m.data)
          if i ~= last + 1 then break end
          last = i
        end
        process.send(me, { "got", n, last })
      end, ls, me)
      local c = assert(tcp.connect("127.0.0.1", port, nil, T))
      U.await(function(m) return m == "accepted" end)
      local lines = {}
      for i = 1, 2000 do lines[i] = i .. "\n" end
      assert(tcp.send(c, table.concat(lines)))
      -- let the loop read what it will; the owner is not receiving
      process.sleep(200)
      local info = process.info(owner)
      assert.is_true(info.mailbox < 200, "mailbox " .. info.mailbox)
      process.send(owner, "go")
      local m = U.await(function(m) return type(m) == "table" and m[1] == "got" end, 20000)
      assert.are.equal(2000, m[2])
      assert.are.equal(2000, m[3])
      tcp.close(c); tcp.close(ls)
    end)
  end)

  describe("credit", function()
    it("is the socket's own: other messages waiting do not stop its data", function()
      local c, s = pair({ packet = "line" }, { active = false })
      local me = process.self()
      -- 300 unrelated messages the owner does not take
      for i = 1, 300 do process.send(me, { "unrelated", i }) end
      assert(tcp.send(c, "1\n2\n3\n"))
      for i = 1, 3 do
        local m = U.await(tcp_msg("tcp", s), 20000)
        assert.are.equal(i .. "\n", m.data)
      end
      tcp.close(c); tcp.close(s)
      U.flush()
    end)
  end)

  describe("credit with a bounded mailbox", function()
    it("keeps room in the owner's mailbox: nothing is dropped", function()
      local genserver = require "genserver"
      local ls, port = listener({ packet = "line", active = false })
      local Srv = {}
      function Srv.init(ls)
        local tcp = require "genserver.tcp"
        local s = assert(tcp.accept(ls, 5000))
        tcp.setopts(s, { active = true })
        return "ok", { n = 0, bad = 0 }
      end
      function Srv.handle_info(m, st)
        if m[1] == "tcp" then
          st.n = st.n + 1
          if m.data ~= st.n .. "\n" then st.bad = st.bad + 1 end
        end
        return "noreply", st
      end
      function Srv.handle_call(_, _, st) return "reply", { st.n, st.bad }, st end
      local c = assert(tcp.connect("127.0.0.1", port, nil, T))
      local pid = assert(genserver.start(Srv, ls, { mailbox_limit = 8, overflow = "drop" }))
      local lines = {}
      for i = 1, 500 do lines[i] = i .. "\n" end
      assert(tcp.send(c, table.concat(lines)))
      local r
      for _ = 1, 2000 do -- bounded: until all 500 arrived
        r = genserver.call(pid, "count", T)
        if r[1] >= 500 then break end
        process.sleep(5)
      end
      assert.are.same({ 500, 0 }, r)
      assert.are.equal(0, process.info(pid).overflowed)
      genserver.stop(pid)
      tcp.close(c); tcp.close(ls)
    end)
  end)

  describe("ownership", function()
    it("closes the sockets of a process that dies: the peer sees it", function()
      local ls, port = listener({ active = false })
      local pid = process.spawn(function(port)
        local tcp = require "genserver.tcp"
        local process = require "genserver.process"
        local c = assert(tcp.connect("127.0.0.1", port, nil, 5000))
        process.receive(5000) -- killed meanwhile
        return c
      end, port)
      local s = assert(tcp.accept(ls, T))
      U.kill(pid)
      local d, err = tcp.recv(s, 0, T)
      assert.is_nil(d)
      assert.are.equal("closed", err)
      tcp.close(s); tcp.close(ls)
    end)

    it("closes an owner's sockets when it ends normally too (active peer gets tcp_closed)", function()
      local ls, port = listener()
      process.spawn(function(port)
        local tcp = require "genserver.tcp"
        assert(tcp.connect("127.0.0.1", port, nil, 5000))
      end, port)
      local s = assert(tcp.accept(ls, T))
      U.await(tcp_msg("tcp_closed", s))
      tcp.close(ls)
    end)

    it("controlling_process hands a socket, sent in a message, to another process", function()
      local c, s = pair({ packet = "line" }, { packet = "line", active = false })
      local me = process.self()
      local pid = process.spawn(function(me)
        local tcp = require "genserver.tcp"
        local process = require "genserver.process"
        local m = process.receive(function(m) return type(m) == "table" and m[1] == "sock" end, 5000)
        local s = m[2]
        -- not ours yet
        local ok, err = tcp.controlling_process(s, process.self())
        process.send(me, { "tried", ok, err, tcp.is_socket(s) })
        process.receive(function(m) return m == "yours" end, 5000)
        local d = process.receive(function(m) return type(m) == "table" and m[1] == "tcp" and m.sock == s end, 5000)
        tcp.send(s, "got " .. d.data)
        process.receive(function(m) return m == "bye" end, 5000)
      end, me)
      process.send(pid, { "sock", s })
      local m = U.await(function(m) return type(m) == "table" and m[1] == "tried" end)
      assert.is_nil(m[2])
      assert.are.equal("not_owner", m[3])
      assert.is_true(m[4])
      assert(tcp.controlling_process(s, pid))
      local ok, err = tcp.controlling_process(s, process.self())
      assert.is_nil(ok)
      assert.are.equal("not_owner", err)
      process.send(pid, "yours")
      assert(tcp.send(c, "x\n"))
      assert.are.equal("got x\n", tcp.recv(c, 0, T))
      process.send(pid, "bye")
      tcp.setopts(c, { active = false, packet = "raw" })
      local d, e2 = tcp.recv(c, 0, T)
      assert.is_nil(d)
      assert.are.equal("closed", e2)
      tcp.close(c)
    end)

    it("recv by a process that is not the owner is nil, \"not_owner\"", function()
      local c, s = pair({ active = false }, nil)
      local me = process.self()
      process.spawn(function(s, me)
        local tcp = require "genserver.tcp"
        local process = require "genserver.process"
        process.send(me, { "r", tcp.recv(s, 0, 100) })
      end, s, me)
      local m = U.await(function(m) return type(m) == "table" and m[1] == "r" end)
      assert.is_nil(m[2])
      assert.are.equal("not_owner", m[3])
      tcp.close(c); tcp.close(s)
    end)
  end)

  describe("closing", function()
    it("send and recv on a closed socket are nil, \"closed\"", function()
      local c, s = pair({ active = false }, nil)
      tcp.close(c)
      local ok, err = tcp.send(c, "x")
      assert.is_nil(ok)
      assert.are.equal("closed", err)
      ok, err = tcp.recv(c, 0, 10)
      assert.is_nil(ok)
      assert.are.equal("closed", err)
      assert.are.equal("closed", select(2, tcp.recv(s, 0, T)))
      tcp.close(s)
      assert.is_true(tcp.close(s)) -- closing twice is harmless
    end)

    it("a send to a peer that has gone is nil, reason, not the end of the program", function()
      -- SIGPIPE would end the whole program: a child process, under a time limit
      local script = [[
        local tcp = require "genserver.tcp"
        local process = require "genserver.process"
        local ls = assert(tcp.listen(0, { active = false }))
        local c = assert(tcp.connect("127.0.0.1", tcp.sockname(ls).port, { active = false }, 5000))
        local s = assert(tcp.accept(ls, 5000))
        tcp.close(s)
        process.sleep(50)
        local ok, err
        for _ = 1, 100 do
          ok, err = tcp.send(c, string.rep("y", 1000))
          if not ok then break end
          process.sleep(5)
        end
        print("alive", ok, err)
      ]]
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(script)
      f:close()
      local p = assert(io.popen("timeout 30 lua5.4 " .. path .. "; echo rc=$?"))
      local out = p:read("a")
      p:close()
      os.remove(path)
      assert.matches("alive\tnil\t%a+\nrc=0", out)
    end)

    it("shutdown(s, \"write\") ends one direction only", function()
      local c, s = pair({ active = false }, { active = false })
      assert(tcp.send(c, "last"))
      assert.is_true(tcp.shutdown(c, "write"))
      assert.are.equal("last", tcp.recv(s, 4, T))
      assert.are.equal("closed", select(2, tcp.recv(s, 0, T)))
      assert(tcp.send(s, "still"))
      assert.are.equal("still", tcp.recv(c, 5, T))
      tcp.close(c); tcp.close(s)
    end)

    it("closes every socket when the runtime shuts down, and the program ends", function()
      local script = [[
        local tcp = require "genserver.tcp"
        local process = require "genserver.process"
        local ls = assert(tcp.listen(0))
        local port = tcp.sockname(ls).port
        process.spawn(function(ls)
          local tcp = require "genserver.tcp"
          local s = tcp.accept(ls, 5000)
          require("genserver.process").receive(60000)
        end, ls)
        local c = assert(tcp.connect("127.0.0.1", port, { active = false }, 5000))
        assert(tcp.send(c, "x"))
        require("genserver.runtime").shutdown()
        print("done")
      ]]
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(script)
      f:close()
      local p = assert(io.popen("timeout 30 lua5.4 " .. path .. " 2>&1; echo rc=$?"))
      local out = p:read("a")
      p:close()
      os.remove(path)
      assert.matches("done\nrc=0", out)
    end)
  end)

  describe("volume", function()
    it("sends 8 MB in one call and it arrives whole", function()
      local c, s = pair({ active = false }, nil)
      local me = process.self()
      local parts = {}
      for i = 1, 8 * 1024 do
        local n = tostring(i)
        parts[i] = string.rep(".", 1023 - #n) .. n .. "\n"
      end
      local big = table.concat(parts)
      assert.are.equal(8 * 1024 * 1024, #big)
      local sender = process.spawn(function(c, big, me)
        local tcp = require "genserver.tcp"
        local process = require "genserver.process"
        process.send(me, { "sent", tcp.send(c, big) })
      end, c, big, me)
      assert(sender)
      local got = assert(tcp.recv(s, #big, 30000))
      assert.are.equal(#big, #got)
      assert.is_true(got == big)
      local m = U.await(function(m) return type(m) == "table" and m[1] == "sent" end)
      assert.is_true(m[2])
      tcp.close(c); tcp.close(s)
    end)

    it("writes what a process sent before it ended (an orderly close)", function()
      local ls, port = listener({ active = false })
      local n = 32 * 1024 * 1024
      -- a mark above n: the send returns at once, the process ends with
      -- most of it unwritten (the peer reads nothing until it is dead)
      local pid, ref = process.spawn_monitor(function(port, n)
        local tcp = require "genserver.tcp"
        local c = assert(tcp.connect("127.0.0.1", port, { high_watermark = 2 * n }, 5000))
        assert(tcp.send(c, string.rep("a", n - 1) .. "z"))
      end, port, n)
      local s = assert(tcp.accept(ls, T))
      U.await_down(ref, 120000) -- 32 MB copied twice: slow under the sanitizers
      local got = assert(tcp.recv(s, n, 120000))
      assert.are.equal(n, #got)
      assert.are.equal("z", got:sub(-1))
      assert.are.equal("closed", select(2, tcp.recv(s, 0, T)))
      tcp.close(s); tcp.close(ls)
    end)

    it("send past the high-water mark gives up after send_timeout", function()
      local c, s = pair({ active = false }, { send_timeout = 50 })
      local chunk = string.rep("x", 1024 * 1024)
      local ok, err
      for _ = 1, 200 do -- the peer never reads: the kernel's buffers fill up
        ok, err = tcp.send(c, chunk)
        if not ok then break end
      end
      assert.is_nil(ok)
      assert.are.equal("timeout", err)
      -- the socket is closed after a send time-out
      assert.is_nil((tcp.send(c, "x")))
      tcp.close(s)
    end)

    it("keeps packets whole when several processes send on one socket at once", function()
      local c, s = pair({ active = false, packet = 2 }, { packet = 2 })
      local me = process.self()
      local senders, per = 8, 400
      for k = 1, senders do
        process.spawn(function(c, k, per, me)
          local tcp = require "genserver.tcp"
          local process = require "genserver.process"
          for i = 1, per do
            -- sizes vary so that some writes are partial and queued
            local body = ("%d:%d:"):format(k, i) .. string.rep(string.char(64 + k), (i * 977) % 20000)
            assert(tcp.send(c, body))
          end
          process.send(me, { "sent", k })
        end, c, k, per, me)
      end
      local next_i = {}
      for k = 1, senders do next_i[k] = 1 end
      -- read late and slowly: the kernel's buffers fill, so sends go from
      -- direct to queued and back many times while others send too
      process.sleep(100)
      for n = 1, senders * per do
        if n % 100 == 0 then process.sleep(1) end
        local d = assert(tcp.recv(s, 0, 30000))
        local k, i, rest = d:match("^(%d+):(%d+):(.*)$")
        k, i = tonumber(k), tonumber(i)
        assert.are.equal(next_i[k], i) -- in order per sender
        assert.are.equal(string.rep(string.char(64 + k), (i * 977) % 20000), rest)
        next_i[k] = i + 1
      end
      for _ = 1, senders do U.await(function(m) return type(m) == "table" and m[1] == "sent" end) end
      tcp.close(c); tcp.close(s)
    end)

    it("serves 100 concurrent clients, every reply correct", function()
      local ls, port = listener({ packet = "line", active = false })
      local me = process.self()
      local acceptors = {}
      for i = 1, 4 do
        acceptors[i] = process.spawn(function(ls)
          local tcp = require "genserver.tcp"
          local process = require "genserver.process"
          while true do
            local s = tcp.accept(ls, 10000)
            if not s then return end
            local h = process.spawn(function()
              local tcp = require "genserver.tcp"
              local process = require "genserver.process"
              local m = process.receive(function(m) return type(m) == "table" and m[1] == "own" end, 5000)
              local s = m[2]
              tcp.setopts(s, { active = true })
              while true do
                local d = process.receive(function(m) return type(m) == "table" and m.sock == s end, 10000)
                if not d or d[1] ~= "tcp" then return end
                tcp.send(s, "re:" .. d.data)
              end
            end)
            tcp.controlling_process(s, h)
            process.send(h, { "own", s })
          end
        end, ls)
      end
      for i = 1, 100 do
        process.spawn(function(port, i, me)
          local tcp = require "genserver.tcp"
          local process = require "genserver.process"
          local c, err = tcp.connect("127.0.0.1", port, { packet = "line", active = false }, 10000)
          if not c then return process.send(me, { "client", i, false, err }) end
          local ok = true
          for k = 1, 5 do
            local line = ("client %d line %d\n"):format(i, k)
            tcp.send(c, line)
            local r = tcp.recv(c, 0, 10000)
            if r ~= "re:" .. line then ok = false end
          end
          tcp.close(c)
          process.send(me, { "client", i, ok })
        end, port, i, me)
      end
      local seen = {}
      for _ = 1, 100 do
        local m = U.await(function(m) return type(m) == "table" and m[1] == "client" end, 60000)
        assert.is_true(m[3], "client " .. m[2] .. ": " .. tostring(m[4]))
        seen[m[2]] = true
      end
      for i = 1, 100 do assert.is_true(seen[i]) end
      tcp.close(ls)
    end)
  end)

  describe("churn", function()
    it("survives owners killed in the middle of sends, and keeps serving", function()
      local ls, port = listener({ packet = 2, active = false })
      local me = process.self()
      process.spawn(function(ls)
        local tcp = require "genserver.tcp"
        local process = require "genserver.process"
        while true do
          local s = tcp.accept(ls, 20000)
          if not s then return end
          local h = process.spawn(function()
            local tcp = require "genserver.tcp"
            local process = require "genserver.process"
            local m = process.receive(function(m) return type(m) == "table" and m[1] == "own" end, 5000)
            local s = m[2]
            tcp.setopts(s, { active = true })
            while true do
              local d = process.receive(function(m) return type(m) == "table" and m.sock == s end, 20000)
              if not d or d[1] ~= "tcp" then return end
              tcp.send(s, d.data)
            end
          end)
          tcp.controlling_process(s, h)
          process.send(h, { "own", s })
        end
      end, ls)
      local victims = {}
      for i = 1, 30 do
        victims[i] = process.spawn(function(port, i)
          local tcp = require "genserver.tcp"
          local c = tcp.connect("127.0.0.1", port, { packet = 2, active = false }, 5000)
          if not c then return end
          local big = string.rep("v", 1000 * i)
          while true do -- until killed
            if not tcp.send(c, big) then return end
            tcp.recv(c, 0, 5000)
          end
        end, port, i)
      end
      process.sleep(50)
      for i = 1, 30 do process.exit(victims[i], "kill") end
      -- the server still answers a new client correctly
      local c = assert(tcp.connect("127.0.0.1", port, { packet = 2, active = false }, T))
      for k = 1, 20 do
        local msg = ("after %d "):format(k) .. string.rep("z", k * 500)
        assert(tcp.send(c, msg))
        assert.are.equal(msg, tcp.recv(c, 0, 20000))
      end
      tcp.close(c); tcp.close(ls)
      assert(me)
    end)
  end)

  describe("from a gen_server", function()
    it("gets socket messages in handle_info", function()
      local genserver = require "genserver"
      local c, s = pair({ packet = "line", active = false }, { packet = "line", active = false })
      local Srv = {}
      function Srv.init() return "ok", {} end
      function Srv.handle_call(req, from, st)
        local tcp = require "genserver.tcp"
        st.s = req
        return "reply", true, st
      end
      function Srv.handle_info(m, st)
        local tcp = require "genserver.tcp"
        if m[1] == "tcp" and m.sock == st.s then tcp.send(st.s, "srv:" .. m.data) end
        return "noreply", st
      end
      local pid = assert(genserver.start(Srv))
      assert(genserver.call(pid, s))
      assert(tcp.controlling_process(s, pid))
      assert(tcp.setopts(s, { active = true }))
      assert(tcp.send(c, "hi\n"))
      assert.are.equal("srv:hi\n", tcp.recv(c, 0, T))
      genserver.stop(pid)
      assert.are.equal("closed", select(2, tcp.recv(c, 0, T)))
      tcp.close(c)
    end)
  end)
end)
