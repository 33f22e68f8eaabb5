-- spec/support/pr_datamod.lua: a loaded module of plain data only (no
-- functions), which the codec's fast path could otherwise copy: it must
-- cross by name.
return { version = 1, list = { 1, 2, 3 } }
