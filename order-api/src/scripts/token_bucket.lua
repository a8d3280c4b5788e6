-- One user's token bucket for CreateOrder, shared by every order-api replica.
-- KEYS[1]: the bucket (hash: t = tokens, ts = last refill, ms of Redis time)
-- ARGV[1]: tokens per second; ARGV[2]: bucket size (burst)
-- Answers {1, 0} when a token was taken, {0, ms until one is available} otherwise.
-- Redis's own clock, so replicas with skewed clocks share one bucket fairly.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
local allowed, wait_ms = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
-- A full bucket is the same as none: let idle users' keys go.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait_ms}
