-- Sets a SKU's counters to what PostgreSQL holds plus what Redis admitted that PostgreSQL has
-- not recorded yet, in one atomic step. Run under the SKU's lock, with the SKU's PostgreSQL row
-- locked, so no batch for this SKU can commit meanwhile.
-- KEYS[1]  the stock hash
-- KEYS[2]  the sorted set of unrecorded admissions
-- ARGV     PostgreSQL's available, reserved, sold, price_cents; the lock holder's fencing
--          token; the sku; the reservation key prefix (`{prefix}:reservation:`); then the order
--          ids among the unrecorded ones that PostgreSQL has in fact recorded (not yet confirmed)
-- The reservation hashes are found from the prefix: they share the hash tag, so they live in
-- the same slot on a Redis Cluster.
-- Reply: {"fenced"} or
--        {"reconciled", before: available, reserved, sold, price_cents ("" each if none), in flight}
local before = redis.call('HMGET', KEYS[1], 'available', 'reserved', 'sold', 'price_cents', 'fence')
if before[5] and tonumber(before[5]) > tonumber(ARGV[5]) then
  return {'fenced'}
end
local recorded = {}
for i = 8, #ARGV do
  recorded[ARGV[i]] = true
end
local in_flight = 0
for _, order_id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if not recorded[order_id] then
    local reservation = ARGV[7] .. order_id
    if redis.call('HGET', reservation, 'state') == 'admitting' then
      local item = redis.call('HGET', reservation, 'item:' .. ARGV[6])
      if item then
        in_flight = in_flight + tonumber(string.match(item, '^(%d+):'))
      end
    end
  end
end
redis.call('HSET', KEYS[1], 'available', tonumber(ARGV[1]) - in_flight,
           'reserved', tonumber(ARGV[2]) + in_flight, 'sold', ARGV[3],
           'price_cents', ARGV[4], 'fence', ARGV[5])
return {'reconciled', before[1] or '', before[2] or '', before[3] or '', before[4] or '',
        tostring(in_flight)}
