--- genserver.udp: UDP sockets whose datagrams arrive as messages
-- (DESIGN.md §2.10): `{ "udp", sock = s, ip = "…", port = n, data = d }` to
-- the controlling process (the opener; its death closes the socket).
-- Reading pauses while the owner has many messages waiting (the kernel
-- then drops datagrams, as UDP does). See docs/tcp.md.
-- @module genserver.udp
local core = require "genserver.core"

local M = {}

--- Open a UDP socket bound to `opts.ip` (default 127.0.0.1) and port (0: any).
---@param port integer
---@param opts table|nil { ip = "…" }
---@return userdata|nil socket
---@return string|nil reason
function M.open(port, opts)
  local ref = core.io_udp_open(port or 0, opts)
  local ok, v = core.wait(ref)
  if ok then return v end
  return nil, v
end

--- Send one datagram (at most 65,507 bytes) to ip:port.
---@param s userdata
---@param ip string
---@param port integer
---@param data string
---@return true|nil
---@return string|nil reason
function M.send(s, ip, port, data)
  return core.io_udp_send(s, ip, port, data)
end

--- The local address: { ip = "…", port = n }.
---@param s userdata
---@return table|nil
---@return string|nil reason
function M.sockname(s)
  local ok, v = core.wait(core.io_name(s, false))
  if ok then return v end
  return nil, v
end

--- Make pid the controlling process (only the current one may).
---@param s userdata
---@param pid userdata
---@return true|nil
---@return string|nil reason
function M.controlling_process(s, pid)
  return core.io_controlling_process(s, pid)
end

--- Close the socket.
---@param s userdata
---@return true
function M.close(s)
  core.wait(core.io_close(s))
  return true
end

return M
