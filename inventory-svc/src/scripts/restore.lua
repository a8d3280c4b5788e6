-- Rebuilds a SKU's lost counters from PostgreSQL's row; never overwrites live counters.
-- KEYS[1]  the stock hash
-- ARGV     available, reserved, sold, price_cents, fence (of the lock holder)
-- Reply: 1 if restored, 0 if the counters were present.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'available', ARGV[1], 'reserved', ARGV[2], 'sold', ARGV[3],
           'price_cents', ARGV[4], 'fence', ARGV[5])
return 1
