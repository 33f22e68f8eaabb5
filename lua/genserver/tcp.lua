--- genserver.tcp: TCP sockets whose data arrive as messages (DESIGN.md §2.10).
--
-- One libuv loop thread per runtime owns every socket and never runs Lua.
-- A socket is a handle (a reference value: it compares with `==`, works as a
-- table key and can be sent in messages) owned by its controlling process,
-- which gets its data as messages and whose death closes it:
--
--   { "tcp", sock = s, data = d }        { "tcp_closed", sock = s }
--   { "tcp_error", sock = s, reason = r } { "tcp_passive", sock = s }
--
-- Functions that wait (accept, connect, recv, and send past the high-water
-- mark) yield the calling process, so it stays responsive to exit signals;
-- on the main script's thread they block it, as its other waits do. Every
-- error is `nil, reason` with a POSIX-style reason ("econnrefused",
-- "eaddrinuse", "closed", "timeout", ...). See docs/tcp.md.
-- @module genserver.tcp
local core = require "genserver.core"

local M = {}

---@alias genserver.socket userdata

-- Wait for the answer to an I/O request: value | nil, reason.
local function await(ref, err)
  if ref == nil then return nil, err end
  local ok, v = core.wait(ref)
  if ok then return v end
  return nil, v
end

--- Listen on a port (0 picks a free one) of `opts.ip` (default 127.0.0.1).
-- opts: ip, backlog (128), and the socket options of `setopts`, which the
-- sockets it accepts inherit.
---@param port integer
---@param opts table|nil
---@return genserver.socket|nil listener
---@return string|nil reason
function M.listen(port, opts)
  return await(core.io_listen(port, opts))
end

--- Wait for a connection on a listening socket; the caller owns it.
-- Several processes may wait on one listener; closing it wakes them with
-- nil, "closed".
---@param ls genserver.socket
---@param timeout number|nil ms (default: none)
---@return genserver.socket|nil
---@return string|nil reason "timeout" | "closed" | ...
function M.accept(ls, timeout)
  return await(core.io_accept(ls, timeout))
end

--- Connect to ip:port; the caller owns the socket.
---@param ip string
---@param port integer
---@param opts table|nil socket options (see setopts)
---@param timeout number|nil ms (default: none)
---@return genserver.socket|nil
---@return string|nil reason "econnrefused" | "timeout" | ...
function M.connect(ip, port, opts, timeout)
  return await(core.io_connect(ip, port, opts, timeout))
end

--- Send data (framed by the socket's packet mode). Returns at once while
-- less than the high-water mark (1 MiB) is unsent; past it, waits until
-- these data are written (at most `send_timeout` ms, after which the socket
-- is closed and nil, "timeout" returned).
---@param s genserver.socket
---@param data string
---@return true|nil
---@return string|nil reason
function M.send(s, data)
  local r, err = core.io_send(s, data)
  if r == true then return true end
  return await(r, err)
end

--- Receive from a passive socket (active = false): `n` bytes (raw mode; 0
-- means whatever is buffered) or one whole packet (framed modes, n ignored).
---@param s genserver.socket
---@param n integer|nil
---@param timeout number|nil ms (default: none)
---@return string|nil data
---@return string|nil reason "closed" | "timeout" | "einval" (active socket) | ...
function M.recv(s, n, timeout)
  return await(core.io_recv(s, n or 0, timeout))
end

--- Change options: active (false | true | "once" | n), packet ("raw" |
-- "line" | 1 | 2 | 4), packet_size (bytes), nodelay, send_timeout (ms).
---@param s genserver.socket
---@param opts table
---@return true|nil
---@return string|nil reason
function M.setopts(s, opts)
  return core.io_setopts(s, opts)
end

--- Make pid the controlling process (only the current one may).
---@param s genserver.socket
---@param pid userdata
---@return true|nil
---@return string|nil reason "not_owner" | "closed"
function M.controlling_process(s, pid)
  return core.io_controlling_process(s, pid)
end

--- Close a socket (any process may); true once it is closed.
---@param s genserver.socket
---@return true
function M.close(s)
  local ok = await(core.io_close(s))
  return ok or true
end

--- Half-close: shutdown(s, "write") sends FIN; reading goes on.
---@param s genserver.socket
---@param how string "write"
---@return true
function M.shutdown(s, how)
  return core.io_shutdown(s, how or "write")
end

--- The peer's address: { ip = "…", port = n }.
---@param s genserver.socket
---@return table|nil
---@return string|nil reason
function M.peername(s)
  return await(core.io_name(s, true))
end

--- The local address: { ip = "…", port = n }.
---@param s genserver.socket
---@return table|nil
---@return string|nil reason
function M.sockname(s)
  return await(core.io_name(s, false))
end

--- Is v a socket handle?
---@param v any
---@return boolean
function M.is_socket(v)
  return core.is_socket(v)
end

return M
