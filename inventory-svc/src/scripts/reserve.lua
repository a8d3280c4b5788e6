-- Admits every item of one order, or none, in one atomic step: the fast gate of a flash sale.
-- KEYS[1]     the order's reservation hash
-- KEYS[2]     the sorted set of admissions not yet recorded in PostgreSQL (score: Redis's
--             own clock, unix ms, so every process compares admission ages on one clock)
-- KEYS[3..n]  the stock hash of each item, in request order
-- ARGV[1]     how long to keep the reservation hash (ms)
-- ARGV[2]     the order id
-- ARGV[3..]   sku, quantity of each item, in the same order
-- Replies (all strings):
--   {"admitted"|"existing", state, sku, quantity, unit_price, ...}
--   {"missing", item_index}                 no counters for that SKU
--   {"short", item_index, available}        not enough stock for that SKU
-- A new reservation starts "admitting" and is listed in KEYS[2]: PostgreSQL has not recorded it
-- yet. inventory-svc moves it to "reserved" once PostgreSQL accepted it (confirm.lua), or undoes
-- it (undo.lua); the sweeper settles admissions left there by a process that died meanwhile.
local reservation = KEYS[1]

local function answer(kind)
  local reply = {kind, redis.call('HGET', reservation, 'state')}
  local fields = redis.call('HGETALL', reservation)
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 5) == 'item:' then
      local quantity, price = string.match(fields[i + 1], '^(%d+):(%d+)$')
      table.insert(reply, string.sub(fields[i], 6))
      table.insert(reply, quantity)
      table.insert(reply, price)
    end
  end
  return reply
end

if redis.call('EXISTS', reservation) == 1 then
  -- A retry: answer what the first call answered, reserve nothing again.
  return answer('existing')
end

-- Check every item before touching any counter, so a refusal has nothing to roll back.
local prices = {}
for i = 3, #KEYS do
  local stock = redis.call('HMGET', KEYS[i], 'available', 'price_cents')
  if not stock[1] or not stock[2] then
    return {'missing', tostring(i - 3)}
  end
  if tonumber(stock[1]) < tonumber(ARGV[2 * i - 2]) then
    return {'short', tostring(i - 3), stock[1]}
  end
  prices[i] = stock[2]
end

local now = redis.call('TIME')
redis.call('HSET', reservation, 'state', 'admitting')
redis.call('ZADD', KEYS[2], now[1] * 1000 + math.floor(now[2] / 1000), ARGV[2])
for i = 3, #KEYS do
  local quantity = tonumber(ARGV[2 * i - 2])
  redis.call('HINCRBY', KEYS[i], 'available', -quantity)
  redis.call('HINCRBY', KEYS[i], 'reserved', quantity)
  redis.call('HSET', reservation, 'item:' .. ARGV[2 * i - 3], ARGV[2 * i - 2] .. ':' .. prices[i])
end
redis.call('PEXPIRE', reservation, ARGV[1])
return answer('admitted')
