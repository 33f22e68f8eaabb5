-- Find stack.lua next to this file (servers inherit package.path).
local dir = arg and arg[0]:match("^(.*)/") or "."
package.path = dir .. "/?.lua;" .. package.path

local Stack = require "stack"

local s = assert(Stack.start({ "a" }, { name = "stack" }))
Stack.push("stack", "b")        -- by name or by pid
Stack.push(s, "c")
print(Stack.size(s))            --> 3
print(Stack.pop(s))             --> c
print(Stack.pop(s))             --> b
print(Stack.start("oops"))      --> nil	items must be a list
require("genserver").stop(s)
