-- Reserves every item of one order, or none, in one atomic step.
-- KEYS[1]     the order's reservation hash
-- KEYS[2..n]  the stock hash of each item, in request order
-- ARGV        sku, quantity of each item, in the same order
-- Replies (all strings):
--   {"reserved"|"existing", state, sku, quantity, unit_price, ...}
--   {"missing", item_index}                 no counters for that SKU
--   {"short", item_index, available}        not enough stock for that SKU
local reservation = KEYS[1]

if redis.call('EXISTS', reservation) == 1 then
  -- A retry: answer what the first call answered, reserve nothing again.
  local reply = {'existing', redis.call('HGET', reservation, 'state')}
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

-- Check every item before touching any counter: all or nothing without a rollback.
local prices = {}
for i = 2, #KEYS do
  local stock = redis.call('HMGET', KEYS[i], 'available', 'price_cents')
  if not stock[1] or not stock[2] then
    return {'missing', tostring(i - 2)}
  end
  if tonumber(stock[1]) < tonumber(ARGV[2 * (i - 1)]) then
    return {'short', tostring(i - 2), stock[1]}
  end
  prices[i] = stock[2]
end

local reply = {'reserved', 'reserved'}
redis.call('HSET', reservation, 'state', 'reserved')
for i = 2, #KEYS do
  local sku = ARGV[2 * (i - 1) - 1]
  local quantity = ARGV[2 * (i - 1)]
  redis.call('HINCRBY', KEYS[i], 'available', -tonumber(quantity))
  redis.call('HINCRBY', KEYS[i], 'reserved', tonumber(quantity))
  redis.call('HSET', reservation, 'item:' .. sku, quantity .. ':' .. prices[i])
  table.insert(reply, sku)
  table.insert(reply, quantity)
  table.insert(reply, prices[i])
end
return reply
