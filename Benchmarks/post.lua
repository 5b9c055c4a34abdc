-- wrk script: POST /api/client/metrics with the bodies in BODIES (token<TAB>body per line),
-- each thread walking them round-robin from its own offset.
local bodies = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter * 17)
end

function init(args)
  for line in io.lines(os.getenv("BODIES")) do
    local tab = string.find(line, "\t", 1, true)
    bodies[#bodies + 1] = { string.sub(line, 1, tab - 1), string.sub(line, tab + 1) }
  end
  i = offset or 0
end

function request()
  i = i + 1
  local b = bodies[(i % #bodies) + 1]
  return wrk.format("POST", "/api/client/metrics",
    { ["Content-Type"] = "application/json", ["Authorization"] = b[1] }, b[2])
end
