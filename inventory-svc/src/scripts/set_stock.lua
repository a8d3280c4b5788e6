-- Applies an operator's stock change that PostgreSQL is about to commit, under the SKU's lock.
-- KEYS[1]  the stock hash
-- ARGV     PostgreSQL's new row: available, reserved, sold, price_cents; the lock holder's
--          fencing token; the change of `available`
-- `available` moves by the change rather than being overwritten, so reservations admitted in
-- Redis but not yet recorded in PostgreSQL stay counted. Missing counters are created from the
-- row. A token older than the one that last wrote these counters is refused.
-- Reply: "updated", "created" or "fenced".
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'available', ARGV[1], 'reserved', ARGV[2], 'sold', ARGV[3],
             'price_cents', ARGV[4], 'fence', ARGV[5])
  return 'created'
end
if tonumber(redis.call('HGET', KEYS[1], 'fence') or '0') > tonumber(ARGV[5]) then
  return 'fenced'
end
redis.call('HINCRBY', KEYS[1], 'available', ARGV[6])
redis.call('HSET', KEYS[1], 'price_cents', ARGV[4], 'fence', ARGV[5])
return 'updated'
