-- web_observer.lua: the observer's views as a live web page on loopback.
local genserver = require "genserver"
local observer = require "genserver.observer"
local tcp = require "genserver.tcp"

genserver.start({ handle_call = function(_, _, n) return "reply", n, n end }, 0,
  { name = "counter" })
local web, port = assert(observer.serve { port = 0 })  -- 0: any free port
-- a browser opens http://127.0.0.1:<port>/; here we ask a JSON route ourselves
local s = assert(tcp.connect("127.0.0.1", port, { active = false }))
tcp.send(s, "GET /api/processes HTTP/1.1\r\nHost: localhost\r\n\r\n")
local reply = {}
repeat
  local data = tcp.recv(s, 0, 5000)        -- nil, "closed" at the end
  reply[#reply + 1] = data
until not data
reply = table.concat(reply)
print(reply:match("^[^\r]*"))
print(reply:find('"name":"counter"', 1, true) ~= nil)
observer.stop(web)                         -- closes the port
print(tcp.connect("127.0.0.1", port))
