--[[
examples/rate_limiter.lua — a token-bucket rate limiter that sleeps when
nobody uses it.

What it shows:
  * a token bucket: `capacity` tokens; each request takes one (`allow`
    answers true) or is refused when the bucket is empty; a timer made with
    process.send_after puts `refill` tokens back every `interval` ms. The
    server arms it one tick at a time, and only while the bucket is not
    full: a full bucket needs no ticks;
  * the idle time-out action: every callback returns a number of ms as its
    last value; if no message at all arrives within that time (requests
    and ticks both count), handle_info receives "timeout". The limiter
    then returns "hibernate": a full garbage collection of the server's
    state before it waits, so an idle limiter costs as little memory as it
    can. It also tells whoever asked to be notified (here the main script,
    which waits for that message instead of polling — a poll would be a
    message too, and keep the limiter awake);
  * the next request wakes it and it answers as usual;
  * process.cancel_timer when the server stops early (terminate).

Run it from the repository root (after `make`):
  eval "$(make -s env)"; lua5.4 examples/rate_limiter.lua
]]

local gs = require "genserver"
local process = require "genserver.process"

local Limiter = { name = "rate_limiter" }

-- arms the refill tick unless it is armed already or the bucket is full
local function arm(st)
  if st.tref == nil and st.tokens < st.capacity then
    st.tref = process.send_after(st.interval, process.self(), "refill")
  end
end

function Limiter.init(cfg)
  local st = { capacity = cfg.capacity, tokens = cfg.capacity, refill = cfg.refill,
               interval = cfg.interval, idle_after = cfg.idle_after,
               notify = cfg.notify, allowed = 0, refused = 0, naps = 0 }
  return "ok", st, st.idle_after
end

function Limiter.handle_call(req, _from, st)
  if req == "allow" then
    if st.tokens > 0 then
      st.tokens = st.tokens - 1
      st.allowed = st.allowed + 1
      arm(st)
      return "reply", true, st, st.idle_after
    end
    st.refused = st.refused + 1
    return "reply", false, st, st.idle_after
  elseif req == "stats" then
    return "reply", { tokens = st.tokens, allowed = st.allowed, refused = st.refused,
                      naps = st.naps }, st, st.idle_after
  end
  return "reply", nil, st, st.idle_after
end

function Limiter.handle_info(msg, st)
  if msg == "refill" then
    st.tref = nil
    st.tokens = math.min(st.capacity, st.tokens + st.refill)
    arm(st)
    return "noreply", st, st.idle_after
  elseif msg == "timeout" then -- no message at all for idle_after ms
    st.naps = st.naps + 1
    if st.notify then process.send(st.notify, { "napping", tokens = st.tokens }) end
    return "noreply", st, "hibernate"
  end
  return "noreply", st, st.idle_after
end

function Limiter.terminate(_reason, st)
  if st.tref then process.cancel_timer(st.tref) end
end

-- ---------------------------------------------------------------- script

-- 3 requests per 200 ms (a refill of 3 every 200 ms), at most 3 in a
-- burst; it naps after 300 ms without any message.
local limiter = assert(gs.start(Limiter, { capacity = 3, refill = 3, interval = 200,
                                           idle_after = 300, notify = process.self() }))

local answers = {}
for i = 1, 5 do answers[i] = tostring(gs.call(limiter, "allow")) end
print("a burst of 5 requests: " .. table.concat(answers, " "))

-- wait (bounded) for a refill: the bucket is full again
local st
for _ = 1, 100 do
  st = gs.call(limiter, "stats")
  if st.tokens == 3 then break end
  process.sleep(20)
end
print(("after a refill: %d tokens"):format(st.tokens))
print("one more request: " .. tostring(gs.call(limiter, "allow")))

print("nobody asks for a while...")
local nap = process.receive(function(m) return m[1] == "napping" end, 5000)
assert(nap, "the limiter never went idle")
print(("the limiter hibernates with a full bucket: %s"):format(tostring(nap.tokens == 3)))
print("a request wakes it: " .. tostring(gs.call(limiter, "allow")))
st = gs.call(limiter, "stats")
print(("allowed %d, refused %d"):format(st.allowed, st.refused))
gs.stop(limiter)
print("done")
