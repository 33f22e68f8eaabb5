-- A module whose top-level code never ends (spec/containment_spec.lua):
-- require "ct_loopmod" runs this inside require, a C call.
local n = 0
while true do n = n + 1 end
