-- A callback module with no callbacks at all.
return {}
