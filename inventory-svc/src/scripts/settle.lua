-- Releases or commits a reservation in Redis after PostgreSQL did; once.
-- KEYS[1]     the order's reservation hash
-- KEYS[2..n]  the stock hash of each reserved item
-- ARGV[1]     "released" or "committed"
-- ARGV[2..]   the reserved quantity of each item, in the same order
-- Reply: the state found before the call, or "missing".
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  -- Redis lost the reservation (or it aged out). Whether the counters were rebuilt before or
  -- after PostgreSQL's settlement cannot be told from here, so drop them: the next use rebuilds
  -- them from PostgreSQL, which has the settlement.
  for i = 2, #KEYS do
    redis.call('DEL', KEYS[i])
  end
  return 'missing'
end
if state ~= 'reserved' and state ~= 'admitting' then
  return state
end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local quantity = tonumber(ARGV[i])
    redis.call('HINCRBY', KEYS[i], 'reserved', -quantity)
    if ARGV[1] == 'released' then
      redis.call('HINCRBY', KEYS[i], 'available', quantity)
    else
      redis.call('HINCRBY', KEYS[i], 'sold', quantity)
    end
  end
end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
return state
