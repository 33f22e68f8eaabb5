-- spec/support/pr_body_fn.lua: a spawn body given by module name; the module
-- returns a function. Replies { "pr_body_fn", <args...>, n = select("#") } to
-- the pid given as first argument.
local process = require "genserver.process"

return function(reply_to, ...)
  process.send(reply_to, { "pr_body_fn", n = select("#", ...), ... })
end
