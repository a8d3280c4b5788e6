-- Returns a reservation's units to stock, once.
-- KEYS[1]     the order's reservation hash
-- KEYS[2..n]  the stock hash of each reserved item
-- ARGV        the reserved quantity of each item, in the same order
-- Reply: the state found before the call ("reserved" means this call released it), or "missing".
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 'missing'
end
if state ~= 'reserved' then
  return state
end
for i = 2, #KEYS do
  -- Counters that vanished (Redis lost its data) are rebuilt from PostgreSQL, not recreated here.
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 'available', tonumber(ARGV[i - 1]))
    redis.call('HINCRBY', KEYS[i], 'reserved', -tonumber(ARGV[i - 1]))
  end
end
redis.call('HSET', KEYS[1], 'state', 'released')
return 'reserved'
