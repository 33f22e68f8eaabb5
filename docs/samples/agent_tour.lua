-- docs/samples/agent_tour.lua: genserver.agent (docs/toolbox.md).
-- Run: eval "$(make -s env)"; lua5.4 docs/samples/agent_tour.lua
local agent = require "genserver.agent"
local gs = require "genserver"

-- an agent holding a table of visits; every fn runs in the agent
local visits = assert(agent.start(function() return {} end, { name = "visits" }))

local function visit(page)
  -- `page` crosses into the agent as an upvalue of the function
  agent.update("visits", function(v) v[page] = (v[page] or 0) + 1 return v end)
end
visit("/"); visit("/"); visit("/about")

print("home:", agent.get(visits, function(v) return v["/"] end))           --> 2
local before = agent.get_and_update(visits, function(v) return v["/about"], {} end)
print("about before the reset:", before)                                    --> 1
print("after the reset:", agent.get(visits, function(v) return next(v) end)) --> nil

-- an error in fn crashes the agent, and the caller gets a genserver error
local ok, err = pcall(agent.get, visits, function(v) return v.missing.field end)
print("error:", ok, gs.is_error(err), err.op)
print("agent_tour: ok")
