-- Marks admitted reservations as recorded by PostgreSQL ("admitting" -> "reserved").
-- KEYS  the reservation hashes of one recorded batch
-- A hash that vanished meanwhile (Redis lost its data) is not recreated.
local confirmed = 0
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == 'admitting' then
    redis.call('HSET', KEYS[i], 'state', 'reserved')
    confirmed = confirmed + 1
  end
end
return confirmed
