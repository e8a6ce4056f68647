-- wrk script: POSTs the reference `on_user_after_save_failure` state to the call endpoint.
-- The token comes from the environment (PLUGBOARD_TOKEN).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PLUGBOARD_TOKEN")
wrk.body = [[{"state": {"error": {"code": "validation_failed", "message": "email has already been taken",
  "fields": {"email": ["is taken"]}, "details": null}, "ip": "203.0.113.9", "endpoint": "html",
  "status": "added", "conn": {"method": "POST", "path": "/signup", "headers": {"user-agent": "wrk"}, "peer": null},
  "modifier_user": "self", "extra": null}}]]

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("requests %d  errors %d  rps %.0f  p50 %.2f ms  p99 %.2f ms\n",
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
