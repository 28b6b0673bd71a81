-- wrk script: every request presents the next of many access tokens, in turn, as real traffic
-- carries many users' tokens. TOKENS names a file with one token per line; WRK_PATH the path.
-- The same script drives hello-world, so the client's cost is the same on both sides.
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do
  if #line > 0 then tokens[#tokens + 1] = line end
end
local path = os.getenv("WRK_PATH") or "/"
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. tokens[i] })
end
