-- wrk load generator shared by all targets of scripts/bench-kv.sh: every
-- request writes a new random key with a value of BENCH_VALUE_SIZE bytes
-- (default 256).
--
--   BENCH_TARGET=raftvisor  PUT /v1/kv/bench/<thread>/<random>, raw value as the body
--                           (raftvisor and raftvisor-insecure)
--   BENCH_TARGET=etcd       POST /v3/kv/put {"key": <b64 key>, "value": <b64 value>}
--                           (etcd and etcd-tls)
--
-- The URL given to wrk decides http or https; wrk's https does not verify
-- the server's certificate (fine for generating load).
--
-- Values come from a pool of random printable strings made once per thread,
-- so the per-request work in the generator is one random key (and, for etcd,
-- its base64 form). At the end, done() prints one "BENCH_JSON {...}" line
-- with throughput, errors and latency percentiles in milliseconds.

local target = os.getenv("BENCH_TARGET") or "raftvisor"
-- raftvisor's API needs a token: the benchmark cluster's admin token.
local raftvisor_headers = {
    ["Content-Type"] = "application/octet-stream",
    ["Authorization"] = "Bearer " .. (os.getenv("RAFTVISOR_TOKEN") or ""),
}
local value_size = tonumber(os.getenv("BENCH_VALUE_SIZE") or "256")
local pool_size = 64

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
local b64_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64_char = {}
for i = 1, 64 do
    b64_char[i - 1] = b64_alphabet:sub(i, i)
end

local function base64(text)
    local out = {}
    local n = #text
    for i = 1, n, 3 do
        local a, b, c = text:byte(i, i + 2)
        local word = a * 65536 + (b or 0) * 256 + (c or 0)
        out[#out + 1] = b64_char[math.floor(word / 262144) % 64]
        out[#out + 1] = b64_char[math.floor(word / 4096) % 64]
        out[#out + 1] = b and b64_char[math.floor(word / 64) % 64] or "="
        out[#out + 1] = c and b64_char[word % 64] or "="
    end
    return table.concat(out)
end

local threads_made = 0

function setup(thread)
    threads_made = threads_made + 1
    thread:set("thread_id", threads_made)
end

local values = {}
local key_prefix = "bench/0/"

function init(args)
    local id = thread_id or 0
    math.randomseed(os.time() * 7919 + id * 104729 + math.floor(os.clock() * 1000000))
    for _ = 1, 10 do
        math.random()
    end
    key_prefix = "bench/" .. id .. "/"
    for i = 1, pool_size do
        local chars = {}
        for j = 1, value_size do
            local k = math.random(1, #alphabet)
            chars[j] = alphabet:sub(k, k)
        end
        local value = table.concat(chars)
        values[i] = (target == "etcd") and base64(value) or value
    end
end

function request()
    local key = string.format("%s%08x%08x", key_prefix, math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
    local value = values[math.random(1, pool_size)]
    if target == "etcd" then
        local body = '{"key":"' .. base64(key) .. '","value":"' .. value .. '"}'
        return wrk.format("POST", "/v3/kv/put", { ["Content-Type"] = "application/json" }, body)
    end
    return wrk.format("PUT", "/v1/kv/" .. key, raftvisor_headers, value)
end

function done(summary, latency, requests)
    local e = summary.errors
    local seconds = summary.duration / 1000000
    local ok = summary.requests - e.status
    io.write(string.format(
        'BENCH_JSON {"target":"%s","value_size":%d,"requests":%d,"errors":%d,"status_errors":%d,'
            .. '"timeouts":%d,"socket_errors":%d,"duration_s":%.3f,"rps":%.1f,"ok_rps":%.1f,'
            .. '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f}\n',
        target, value_size, summary.requests, e.status + e.timeout + e.connect + e.read + e.write,
        e.status, e.timeout, e.connect + e.read + e.write, seconds, summary.requests / seconds,
        ok / seconds, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
        latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000))
end
