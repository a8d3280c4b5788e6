-- Marks admitted reservations as recorded by PostgreSQL ("admitting" -> "reserved").
-- KEYS[1]     the sorted set of admissions not yet recorded
-- KEYS[2..n]  the reservation hashes of one recorded batch
-- ARGV        their order ids, in the same order
-- A hash that vanished meanwhile (Redis lost its data) is not recreated.
local confirmed = 0
for i = 2, #KEYS do
  redis.call('ZREM', KEYS[1], ARGV[i - 1])
  if redis.call('HGET', KEYS[i], 'state') == 'admitting' then
    redis.call('HSET', KEYS[i], 'state', 'reserved')
    confirmed = confirmed + 1
  end
end
return confirmed
