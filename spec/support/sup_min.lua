-- spec/support/sup_min.lua: the smallest server (no callbacks: the state is
-- the argument), for the 10,000-child supervisor.
return {}
