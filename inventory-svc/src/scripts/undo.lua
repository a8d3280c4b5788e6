-- Undoes an admission PostgreSQL did not record (refused, failed, or a retry it already had).
-- KEYS[1]     the order's reservation hash
-- KEYS[2]     the sorted set of admissions not yet recorded
-- KEYS[3..n]  the stock hash of each item
-- ARGV[1]     the order id
-- ARGV[2..]   per item: quantity, ceiling
--             ceiling -1: give the units back to `available` (PostgreSQL did not take them);
--             ceiling >= 0: PostgreSQL has only that many available, so Redis ran ahead of it:
--             lower `available` to at most the ceiling instead of giving units back.
-- Only an admission still "admitting" is undone; anything else was settled or rebuilt since.
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') ~= 'admitting' then
  return 0
end
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local quantity = tonumber(ARGV[2 * i - 4])
    local ceiling = tonumber(ARGV[2 * i - 3])
    redis.call('HINCRBY', KEYS[i], 'reserved', -quantity)
    if ceiling < 0 then
      redis.call('HINCRBY', KEYS[i], 'available', quantity)
    elseif tonumber(redis.call('HGET', KEYS[i], 'available')) > ceiling then
      redis.call('HSET', KEYS[i], 'available', ceiling)
    end
  end
end
redis.call('DEL', KEYS[1])
return 1
