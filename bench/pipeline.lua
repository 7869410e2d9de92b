-- wrk's pipeline example: every write carries DEPTH requests (default 16),
-- all built once with wrk.format() (method, path and headers of the command
-- line, Host included).  wrk counts responses, so its Requests/sec is
-- responses per second.
--
--     wrk -t1 -c20 -d10s -s bench/pipeline.lua http://127.0.0.1:PORT/ -- 16

init = function(args)
   local depth = tonumber(args[1]) or 16
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format()
   end
   req = table.concat(r)
end

request = function()
   return req
end
