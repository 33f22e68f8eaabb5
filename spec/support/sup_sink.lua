-- spec/support/sup_sink.lua: a server that keeps the reports the logger
-- hands to sup_log_handler (registered as "sup_log_sink").
-- Calls: "take" -> the reports received since the last take (and forgets
-- them); "count" -> how many are kept.
local Sink = {}

function Sink.init() return "ok", { reports = {} } end

function Sink.handle_cast(msg, st)
  if type(msg) == "table" and msg[1] == "report" then
    st.reports[#st.reports + 1] = msg[2]
  end
  return "noreply", st
end

function Sink.handle_call(req, _from, st)
  if req == "take" then
    local r = st.reports
    st.reports = {}
    return "reply", r, st
  end
  if req == "count" then return "reply", #st.reports, st end
  return "reply", nil, st
end

return Sink
