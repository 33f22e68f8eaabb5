-- spec/support/vis_quick.lua: a plain process body that returns at once
-- (visibility_spec: a dead pid).
return function() end
